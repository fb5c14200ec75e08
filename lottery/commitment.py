"""Committing the closed registrant list: the Merkle tree, its signed root, and inclusion proofs.

The eligible (not withdrawn) registrations are copied, in ticket order, into
`committed_registrants`; their leaves are hashed into an RFC 6962 tree whose every level is stored
in chunks, so a citizen's inclusion proof costs one indexed query. The signed statement is kept as
the exact bytes signed. All of it commits in the approval's transaction with the state change.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from kernel.approvals import ApprovalContext
from kernel.errors import NotFound, WrongState
from lottery import campaigns, parallel, published, registrant_list
from lottery.leaf import encode_leaf
from lottery.merkle import HASH_SIZE, MerkleTree, hash_leaves
from lottery.statements import commitment_statement, timestamp

CHUNK_NODES = 32_768  # 1 MiB of hashes per stored chunk
FETCH_BATCH = 50_000
_LIST_QUERY = """SELECT ticket, pseudonym, stratum FROM committed_registrants WHERE campaign_id = $1
                 ORDER BY leaf_index"""


class Commitment(msgspec.Struct, frozen=True):
    campaign_id: str
    tree_size: int
    root_hex: str
    committed_at: str
    key_id: str
    signature_hex: str
    statement: str  # the exact UTF-8 text signed


class InclusionProof(msgspec.Struct, frozen=True):
    campaign_id: str
    ticket: int
    leaf_index: int
    tree_size: int
    leaf_hex: str
    audit_path: list[str]
    root_hex: str
    commitment: Commitment


async def precheck(conn: asyncpg.Connection, campaign_id: str, params: dict[str, Any]) -> None:
    campaign = await campaigns.fetch(conn, campaign_id)
    if campaign.state != "closed":
        raise WrongState(f"campaign is {campaign.state}; the list is committed once registration is closed",
                         code="wrong_campaign_state", state=campaign.state)


COMMIT_STEPS = 3  # the progress a commitment job reports: copy, hash, sign


async def execute(ctx: ApprovalContext) -> dict[str, Any]:
    conn, campaign_id = ctx.conn, ctx.subject
    await ctx.progress(0, COMMIT_STEPS, "copying the list")
    state = await conn.fetchval("SELECT state FROM campaigns WHERE id = $1 FOR UPDATE", campaign_id)
    if state != "closed":
        raise WrongState(f"campaign is {state}, not closed", code="wrong_campaign_state", state=state)
    await conn.execute(
        """INSERT INTO committed_registrants (campaign_id, leaf_index, ticket, pseudonym, stratum)
           SELECT campaign_id, row_number() OVER (ORDER BY ticket) - 1, ticket, pseudonym, stratum
           FROM registrations WHERE campaign_id = $1 AND withdrawn_at IS NULL""", campaign_id)
    count = await conn.fetchval("SELECT count(*) FROM committed_registrants WHERE campaign_id = $1", campaign_id)
    await ctx.progress(1, COMMIT_STEPS, "hashing the tree")
    if count >= ctx.settings.draw_parallel_from:
        tree = await _tree_in_processes(conn, ctx.settings.state_dir, campaign_id)
    else:
        tree = await _tree_in_process(conn, campaign_id)
    await conn.copy_records_to_table(
        "merkle_chunks", columns=["campaign_id", "level", "chunk", "nodes"],
        records=_chunks(campaign_id, tree))
    await ctx.progress(2, COMMIT_STEPS, "signing the commitment")
    committed_at = timestamp(await conn.fetchval("SELECT clock_timestamp()"))
    key = ctx.settings.service_key
    root_hex = tree.root.hex()
    statement = commitment_statement(campaign_id, tree.size, root_hex, committed_at, key.key_id)
    signature = key.sign(statement)
    await conn.execute(
        """INSERT INTO commitments (campaign_id, tree_size, root, committed_at, key_id, statement, signature,
                                    approval_id)
           VALUES ($1, $2, $3, $4::text::timestamptz, $5, $6, $7, $8)""",
        campaign_id, tree.size, tree.root, committed_at, key.key_id, statement, signature, ctx.approval_id)
    # The published list is written now, once, in the same transaction: downloads read the file.
    await published.publish_lists(conn, ctx.settings.state_dir / "work", campaign_id)
    await campaigns.transition(conn, campaign_id, "committed", ctx.checker,
                               {"tree_size": tree.size, "root_hex": root_hex, "maker": ctx.maker})
    return {"tree_size": tree.size, "root_hex": root_hex, "committed_at": committed_at}


async def _tree_in_process(conn: asyncpg.Connection, campaign_id: str) -> MerkleTree:
    hashes = bytearray()
    batch: list[bytes] = []
    async for row in conn.cursor(_LIST_QUERY, campaign_id, prefetch=FETCH_BATCH):
        batch.append(encode_leaf(campaign_id, row[0], row[1], row[2]))
        if len(batch) >= FETCH_BATCH:
            hashes.extend(hash_leaves(batch))
            batch.clear()
    hashes.extend(hash_leaves(batch))
    return MerkleTree(hashes)


async def _tree_in_processes(conn: asyncpg.Connection, state_dir: Path, campaign_id: str) -> MerkleTree:
    """Large lists: PostgreSQL writes the list as CSV (the published format), processes hash it."""
    work = state_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{campaign_id}-registrants.csv"
    strata = [r[0] for r in await conn.fetch(
        "SELECT DISTINCT stratum FROM committed_registrants WHERE campaign_id = $1", campaign_id)]
    try:
        with path.open("wb") as handle:
            handle.write((registrant_list.CSV_HEADER + "\n").encode())
            await conn.copy_from_query(_LIST_QUERY, campaign_id, output=handle, format="csv")

        def build() -> MerkleTree:
            with parallel.executor(spawn=True) as pool:
                digest = parallel.digest_list(path, campaign_id, strata, pool)
                return parallel.build_tree(digest.hashes, pool)
        return await asyncio.to_thread(build)
    finally:
        path.unlink(missing_ok=True)


def _chunks(campaign_id: str, tree: MerkleTree) -> Any:
    step = CHUNK_NODES * HASH_SIZE
    for level_number, level in enumerate(tree.levels):
        for chunk, start in enumerate(range(0, max(len(level), 1), step)):
            yield campaign_id, level_number, chunk, bytes(level[start:start + step])


def path_positions(index: int, size: int) -> list[tuple[int, int]]:
    """(level, node index) of each audit-path node, bottom up; same walk as MerkleTree.inclusion_proof."""
    positions: list[tuple[int, int]] = []
    count, i, level = size, index, 0
    while count > 1:
        sibling = i ^ 1
        if sibling < count:
            positions.append((level, sibling))
        i //= 2
        count = (count + 1) // 2
        level += 1
    return positions


async def fetch_commitment(conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> Commitment:
    row = await conn.fetchrow(
        "SELECT tree_size, root, key_id, statement, signature FROM commitments WHERE campaign_id = $1",
        campaign_id)
    if row is None:
        raise NotFound(f"campaign {campaign_id} has no commitment yet", code="not_committed")
    statement = bytes(row["statement"]).decode()
    committed_at = msgspec.json.decode(statement)["committed_at"]
    return Commitment(campaign_id, row["tree_size"], bytes(row["root"]).hex(), committed_at, row["key_id"],
                      bytes(row["signature"]).hex(), statement)


async def inclusion_proof(pool: asyncpg.Pool, campaign_id: str, ticket: int) -> InclusionProof:
    commitment = await fetch_commitment(pool, campaign_id)
    row = await pool.fetchrow(
        """SELECT leaf_index, pseudonym, stratum FROM committed_registrants
           WHERE campaign_id = $1 AND ticket = $2""", campaign_id, ticket)
    if row is None:
        raise NotFound(f"ticket {ticket} is not in campaign {campaign_id}'s committed list",
                       code="ticket_not_committed")
    positions = path_positions(row["leaf_index"], commitment.tree_size)
    nodes = await pool.fetch(
        """SELECT substring(m.nodes FROM p.off + 1 FOR 32) AS node
           FROM unnest($2::int[], $3::int[], $4::int[]) WITH ORDINALITY AS p(level, chunk, off, ord)
           JOIN merkle_chunks m ON m.campaign_id = $1 AND m.level = p.level AND m.chunk = p.chunk
           ORDER BY p.ord""",
        campaign_id, [lv for lv, _ in positions], [i // CHUNK_NODES for _, i in positions],
        [(i % CHUNK_NODES) * HASH_SIZE for _, i in positions])
    if len(nodes) != len(positions):
        raise RuntimeError(f"stored tree of {campaign_id} is missing nodes")
    leaf = encode_leaf(campaign_id, ticket, row["pseudonym"], row["stratum"])
    return InclusionProof(campaign_id, ticket, row["leaf_index"], commitment.tree_size, leaf.hex(),
                          [bytes(n["node"]).hex() for n in nodes], commitment.root_hex, commitment)
