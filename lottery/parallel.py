"""The draw's heavy hashing spread over processes: the same bytes as the sequential code, faster.

* `digest_list`: the published registrant list (CSV or NDJSON) is cut at line boundaries; each
  piece is parsed, checked and hashed into leaf hashes in its own process.
* `build_tree`: the leaves are cut into aligned blocks of 2^20; every block but the last is a
  perfect subtree, so each block's levels are built independently and concatenated level by level,
  giving exactly the level-wise RFC 6962 tree.
* `select` and `run` take an executor; each stratum's lowest keys are found in parallel.
Standard library only: the offline verifier uses this module.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import multiprocessing
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lottery.merkle import HASH_SIZE, MerkleTree, next_level
from lottery.registrant_list import (
    CSV_HEADER,
    CSV_LINE,
    LAYOUT,
    MAX_TICKET,
    ListError,
    csv_ticket,
    ndjson_row,
)

BLOCK_LEAVES = 1 << 20
PIECES_PER_WORKER = 4
_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
ORDER = "R12.4.4"
STRATUM = "R12.4.5"
LEAF_FIELDS = "R3.3"


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def executor(workers: int | None = None, *, spawn: bool = False) -> ProcessPoolExecutor:
    """A process pool; `spawn` for callers inside servers, whose threads make fork unsafe."""
    context = multiprocessing.get_context("spawn") if spawn else None
    return ProcessPoolExecutor(max_workers=workers or default_workers(), mp_context=context,
                               initializer=_follow_parent, initargs=(os.getpid(),))


def _follow_parent(parent: int) -> None:
    """A pool process ends when the process that made it is gone.

    A jobs worker killed mid-draw (SIGKILL, an evicted pod) cannot shut its pool down, and its
    processes would go on hashing for a draw that another worker restarts."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


@dataclass
class Piece:
    hashes: bytes
    tickets: dict[str, bytes]  # stratum -> array('Q') bytes, ascending
    count: int
    first: int
    last: int


def digest_piece(path: str, start: int, end: int, campaign_id: str, strata: Sequence[str], csv: bool) -> Piece:
    """Parse, check and hash the registrant lines in bytes [start, end) of the list."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ListError(LAYOUT, f"the list is not UTF-8 near byte {start + exc.start}") from None
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the piece ends at a line boundary
    return _hash_lines(lines, campaign_id, strata, csv)


def _hash_lines(lines: list[bytes], campaign_id: str, strata: Sequence[str], csv: bool) -> Piece:
    head = b"\x00\x01"  # RFC 6962 leaf prefix, then the leaf format version
    campaign_raw = campaign_id.encode()
    campaign_lp = _U16.pack(len(campaign_raw)) + campaign_raw
    known = {s.encode() for s in strata}
    found: dict[bytes, array.array[int]] = {s: array.array("Q") for s in known}
    appends = {s: a.append for s, a in found.items()}
    # One struct per (pseudonym length, stratum): each leaf is then built by a single C call.
    packers: dict[tuple[int, bytes], tuple[Callable[..., bytes], int, int]] = {}
    out = bytearray()
    extend = out.extend
    sha = hashlib.sha256
    previous = first = -1
    for line in lines:
        if csv:
            parts = line.split(b",")
            if len(parts) != 3:
                raise ListError(CSV_LINE, f"line {line[:60]!r} does not split into ticket,pseudonym,stratum")
            number, name, group = parts
            # bytes.isdigit is ASCII-only; a leading zero would be a second spelling of the same ticket.
            ticket = int(number) if number.isdigit() and len(number) <= 20 and (number[0] != 48 or len(number) == 1) \
                else -1
            if not 0 <= ticket <= MAX_TICKET:
                csv_ticket(number)  # raises, naming the rule
        else:
            ticket, name, group = ndjson_row(line)
        if ticket <= previous:
            raise ListError(ORDER, f"ticket {ticket} out of order or repeated")
        packer = packers.get((len(name), group))
        if packer is None:
            if group not in known:
                raise ListError(STRATUM, f"ticket {ticket} is in an unknown stratum {group.decode(errors='replace')!r}")
            if not 0 < len(name) <= 255:
                raise ListError(LEAF_FIELDS, f"ticket {ticket}: pseudonym must be 1-255 bytes")
            layout = struct.Struct(f">2sQ{len(campaign_lp)}sH{len(name)}sH{len(group)}s")
            packer = packers[(len(name), group)] = (layout.pack, len(name), len(group))
        pack, name_length, group_length = packer
        extend(sha(pack(head, ticket, campaign_lp, name_length, name, group_length, group)).digest())
        appends[group](ticket)
        if first < 0:
            first = ticket
        previous = ticket
    count = len(out) // HASH_SIZE
    return Piece(bytes(out), {s.decode(): a.tobytes() for s, a in found.items()}, count, first, previous)


def _cut(path: Path, pieces: int) -> tuple[bool, list[tuple[int, int]]]:
    """Whether the list is CSV, and byte ranges that start and end at line boundaries."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.readline()
        csv = header == CSV_HEADER.encode() + b"\n"
        if not csv and header[:1] not in (b"{", b""):
            raise ListError(LAYOUT, "registrant list: the first line is neither the CSV header nor an NDJSON object")
        begin = len(header) if csv else 0
        if size > begin:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                raise ListError(LAYOUT, "registrant list: the last line does not end with a newline")
        bounds = [begin]
        step = max(1, (size - begin) // pieces)
        for i in range(1, pieces):
            handle.seek(max(begin + i * step, bounds[-1]))
            handle.readline()
            position = handle.tell()
            if position >= size:
                break
            bounds.append(position)
    bounds.append(size)
    return csv, [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


@dataclass
class ListDigest:
    hashes: bytearray
    tickets_by_stratum: dict[str, array.array[int]]
    count: int


def digest_list(path: Path, campaign_id: str, strata: Sequence[str], pool: Executor) -> ListDigest:
    workers = getattr(pool, "_max_workers", 2)
    csv, ranges = _cut(path, workers * PIECES_PER_WORKER)
    futures = [pool.submit(digest_piece, str(path), a, b, campaign_id, tuple(strata), csv) for a, b in ranges]
    hashes = bytearray()
    by_stratum: dict[str, array.array[int]] = {s: array.array("Q") for s in strata}
    count, previous = 0, -1
    for future in futures:
        piece = future.result()
        if piece.count == 0:
            continue
        if piece.first <= previous:
            raise ListError(ORDER, f"ticket {piece.first} out of order or repeated")
        hashes.extend(piece.hashes)
        for stratum, raw in piece.tickets.items():
            by_stratum[stratum].frombytes(raw)
        count += piece.count
        previous = piece.last
    return ListDigest(hashes, by_stratum, count)


def block_levels(block: bytes) -> list[bytes]:
    levels = [block]
    while len(levels[-1]) > HASH_SIZE:
        levels.append(bytes(next_level(levels[-1])))
    return levels


def build_tree(leaf_hashes: bytes | bytearray, pool: Executor | None) -> MerkleTree:
    """The same tree as MerkleTree(leaf_hashes), with the blocks hashed in parallel."""
    size = len(leaf_hashes) // HASH_SIZE
    if pool is None or size <= BLOCK_LEAVES:
        return MerkleTree(leaf_hashes)
    view = memoryview(leaf_hashes)
    step = BLOCK_LEAVES * HASH_SIZE
    blocks = [bytes(view[i:i + step]) for i in range(0, len(leaf_hashes), step)]
    results = list(pool.map(block_levels, blocks))
    height = max(len(levels) for levels in results)  # the last block may be shorter
    merged: list[bytearray] = []
    for level in range(height):
        row = bytearray()
        for levels in results:
            row.extend(levels[min(level, len(levels) - 1)])
        merged.append(row)
    while len(merged[-1]) > HASH_SIZE:
        merged.append(next_level(merged[-1]))
    return MerkleTree.from_levels(merged)


def block_root(block: bytes) -> bytes:
    level: bytes | bytearray = block
    while len(level) > HASH_SIZE:
        level = next_level(level)
    return bytes(level)


def tree_root(leaf_hashes: bytes | bytearray, pool: Executor | None) -> bytes:
    """Only the root (what a verifier needs): each block sends back 32 bytes, not its levels."""
    size = len(leaf_hashes) // HASH_SIZE
    if pool is None or size <= BLOCK_LEAVES:
        return MerkleTree(leaf_hashes).root
    view = memoryview(leaf_hashes)
    step = BLOCK_LEAVES * HASH_SIZE
    tops = b"".join(pool.map(block_root, (bytes(view[i:i + step]) for i in range(0, len(leaf_hashes), step))))
    return MerkleTree(tops).root
