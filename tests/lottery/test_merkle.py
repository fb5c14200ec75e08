"""RFC 6962 / RFC 9162 Merkle tree: the published test vectors, then properties on random trees.

Vectors: transparency-dev/merkle (the Go library behind certificate-transparency-go's Merkle code),
commit 417fb0c. Leaves, per-level node hashes and roots from `testonly/constants.go`; the five
inclusion proofs and the corrupted probes from `cmd/proofgen/main.go`, which writes the
`testdata/inclusion/**.json` corpus the Go verifier is tested against (`proof/verify_test.go`).
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery.merkle import (
    HASH_SIZE,
    MerkleTree,
    hash_leaves,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_of,
    verify_inclusion,
)

h = bytes.fromhex

# testonly/constants.go: LeafInputs()
LEAVES = [h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                         "606162636465666768696a6b6c6d6e6f")]

# testonly/constants.go: RootHashes(), indexed by tree size (0 = the empty tree, SHA-256 of "").
ROOTS = [h(x) for x in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]

# testonly/constants.go: NodeHashes(), the complete subtrees of the 8-leaf tree, level by level.
NODE_HASHES = [[h(x) for x in level] for level in (
    ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",),
)]

# cmd/proofgen/main.go: inclusionProofs, as (0-based leaf index, tree size, audit path); the Go
# table numbers leaves from 1. Each proof is for LEAVES[index] against ROOTS[size].
INCLUSION_PROOFS = [
    (0, 1, []),
    (0, 8, [h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (5, 8, [h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
]

# cmd/proofgen/main.go: sha256SomeHash and sha256EmptyTreeHash, used by the corrupted probes.
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")
EMPTY_TREE_HASH = h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
U64_MAX = 2**64 - 1


def accepts(leaf_hash_value: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """The Go corpus's VerifyInclusion(leafIdx, treeSize, leafHash, proof, root) in our terms."""
    computed = root_from_inclusion_proof(leaf_hash_value, index, size, proof)
    return computed is not None and computed == root


def path_shape(index: int, size: int) -> tuple[str, ...]:
    """RFC 6962 section 2.1.1 PATH(m, D[n]), sides only: 'R' a right sibling, 'L' a left one; leaf first."""
    if size == 1:
        return ()
    k = 1
    while k * 2 < size:
        k *= 2
    if index < k:
        return (*path_shape(index, k), "R")
    return (*path_shape(index - k, size - k), "L")


def reference_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n]) with its hashes, by the recursive definition."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if index < k:
        return [*reference_path(index, leaves[:k]), root_of(leaves[k:])]
    return [*reference_path(index - k, leaves[k:]), root_of(leaves[:k])]


# --- published vectors ------------------------------------------------------------------------

def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert MerkleTree(b"").root == hashlib.sha256(b"").digest() == ROOTS[0]
    assert MerkleTree.from_leaves([]).size == 0
    assert root_of([]) == ROOTS[0]


@pytest.mark.parametrize("size", range(9))
def test_published_roots(size: int) -> None:
    assert MerkleTree.from_leaves(LEAVES[:size]).root == ROOTS[size]
    assert root_of(LEAVES[:size]) == ROOTS[size]


def test_published_node_hashes_are_the_tree_levels() -> None:
    tree = MerkleTree.from_leaves(LEAVES)
    assert [[bytes(level[i:i + HASH_SIZE]) for i in range(0, len(level), HASH_SIZE)]
            for level in tree.levels] == NODE_HASHES
    assert [leaf_hash(leaf) for leaf in LEAVES] == NODE_HASHES[0]
    assert node_hash(NODE_HASHES[0][0], NODE_HASHES[0][1]) == NODE_HASHES[1][0]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS)
def test_published_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    tree = MerkleTree.from_leaves(LEAVES[:size])
    assert tree.inclusion_proof(index) == proof
    assert root_from_inclusion_proof(leaf_hash(LEAVES[index]), index, size, proof) == ROOTS[size]
    assert verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size])


def corrupted_probes(index: int, size: int, proof: list[bytes], root: bytes,
                     lh: bytes) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """cmd/proofgen/main.go invalidInclusionProof: every probe the Go corpus marks wantErr."""
    probes = [
        ("leafIdx sub @1", (index - 1) % 2**64, size, proof, root, lh),  # Go's uint64 wraps at 0
        ("leafIdx plus @1", index + 1, size, proof, root, lh),
        ("leafIdx XOR @2", index ^ 2, size, proof, root, lh),
        ("treeSize mul @2", index, size * 2, proof, root, lh),
        ("treeSize div @2", index, size // 2, proof, root, lh),
        ("wrong leaf", index, size, proof, root, b"WrongLeaf"),
        ("empty root", index, size, proof, EMPTY_TREE_HASH, lh),
        ("random root", index, size, proof, SOME_HASH, lh),
        ("trailing garbage", index, size, [*proof, b""], root, lh),
        ("trailing root", index, size, [*proof, root], root, lh),
        ("preceding garbage", index, size, [b"", *proof], root, lh),
        ("preceding root", index, size, [root, *proof], root, lh),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append((f"modified proof[{i}] bit @3", index, size, wrong, root, lh))
    if proof:
        probes.append(("removed component", index, size, proof[:-1], root, lh))
    if len(proof) > 1:
        probes.append(("inserted component", index, size, [proof[0], SOME_HASH, *proof[1:]], root, lh))
    return probes


CORRUPTED = [
    pytest.param(*probe, id=f"{index}/{size}:{probe[0]}")
    for index, size, proof in INCLUSION_PROOFS
    for probe in corrupted_probes(index, size, proof, ROOTS[size], leaf_hash(LEAVES[index]))
]


@pytest.mark.parametrize(("desc", "index", "size", "proof", "root", "lh"), CORRUPTED)
def test_published_corrupted_probes_fail(desc: str, index: int, size: int, proof: list[bytes],
                                         root: bytes, lh: bytes) -> None:
    assert not accepts(lh, index, size, proof, root), desc


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_published_static_probes_fail(index: int, size: int) -> None:
    """cmd/proofgen/main.go staticInclusionProbes: empty proofs against empty/garbage roots."""
    assert not accepts(SOME_HASH, index, size, [], b"")
    assert not accepts(b"", index, size, [], EMPTY_TREE_HASH)
    assert not accepts(SOME_HASH, index, size, [], EMPTY_TREE_HASH)


def test_published_single_entry_probes() -> None:
    """cmd/proofgen/main.go singleEntryInclusionProbes: a one-leaf tree's root is its leaf hash."""
    single = leaf_hash(b"data")
    assert accepts(single, 0, 1, [], single)
    assert not accepts(b"", 0, 1, [], single)
    assert not accepts(single, 0, 1, [], b"")
    assert not accepts(b"", 0, 1, [], b"")  # "empty root and leaf": refused for the leaf hash's size
    assert verify_inclusion(b"data", 0, 1, [], single)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_leaf_hash_of_the_wrong_size_is_refused(length: int) -> None:
    assert root_from_inclusion_proof(b"\x07" * length, 0, 1, []) is None
    assert root_from_inclusion_proof(b"\x07" * length, 0, 8, INCLUSION_PROOFS[1][2]) is None


def test_index_and_size_range_checks() -> None:
    proof = INCLUSION_PROOFS[1][2]
    lh = leaf_hash(LEAVES[0])
    for index, size in [(-1, 8), (8, 8), (9, 8), (U64_MAX, 8), (0, 0), (0, -1)]:
        assert root_from_inclusion_proof(lh, index, size, proof) is None
    with pytest.raises(IndexError):
        MerkleTree.from_leaves(LEAVES).inclusion_proof(8)
    with pytest.raises(IndexError):
        MerkleTree.from_leaves(LEAVES).inclusion_proof(-1)
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree(b"\x00" * 33)


# --- properties on random trees ---------------------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=12), max_size=300)
small_trees = st.lists(st.binary(max_size=8), min_size=1, max_size=70, unique=True)  # distinct leaves: a
# tree with two equal leaves has two indexes whose proofs are the same bytes


@settings(max_examples=150, deadline=None)
@given(leaf_lists)
def test_levelwise_root_equals_recursive_definition(leaves: list[bytes]) -> None:
    tree = MerkleTree.from_leaves(leaves)
    assert tree.size == len(leaves)
    assert tree.root == root_of(leaves)
    assert MerkleTree(hash_leaves(leaves)).root == tree.root


@settings(max_examples=60, deadline=None)
@given(small_trees)
def test_every_index_has_a_verifying_proof_equal_to_rfc_path(leaves: list[bytes]) -> None:
    tree = MerkleTree.from_leaves(leaves)
    root, size = tree.root, tree.size
    for i, leaf in enumerate(leaves):
        proof = tree.inclusion_proof(i)
        assert proof == reference_path(i, leaves)
        assert len(proof) == len(path_shape(i, size))
        assert verify_inclusion(leaf, i, size, proof, root)


def flip(data: bytes, position: int, mask: int) -> bytes:
    position %= len(data)
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1:]


@settings(max_examples=200, deadline=None)
@given(small_trees, st.data())
def test_any_flipped_byte_fails(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree.from_leaves(leaves)
    i = data.draw(st.integers(0, tree.size - 1), label="index")
    proof, root, leaf = tree.inclusion_proof(i), tree.root, leaves[i]
    position = data.draw(st.integers(0, 10_000), label="position")
    mask = data.draw(st.integers(1, 255), label="mask")
    assert not verify_inclusion(leaf, i, tree.size, proof, flip(root, position, mask))
    assert not verify_inclusion(leaf + b"\x00", i, tree.size, proof, root)
    if leaf:
        assert not verify_inclusion(flip(leaf, position, mask), i, tree.size, proof, root)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1), label="proof element")
        bad = list(proof)
        bad[k] = flip(bad[k], position, mask)
        assert not verify_inclusion(leaf, i, tree.size, bad, root)
        assert not verify_inclusion(leaf, i, tree.size, proof[:-1], root)
    assert not verify_inclusion(leaf, i, tree.size, [*proof, root], root)


@settings(max_examples=100, deadline=None)
@given(small_trees, st.data())
def test_wrong_index_fails(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree.from_leaves(leaves)
    size = tree.size
    i = data.draw(st.integers(0, size - 1), label="index")
    proof, root = tree.inclusion_proof(i), tree.root
    for j in {*range(size), size, size + 1, 2 * size, -1, U64_MAX} - {i}:
        assert not verify_inclusion(leaves[i], j, size, proof, root)


@settings(max_examples=100, deadline=None)
@given(small_trees, st.data())
def test_wrong_tree_size(leaves: list[bytes], data: st.DataObject) -> None:
    """A proof fails for any other size unless that size gives the leaf the very same path shape.

    RFC 9162 verification hashes the same values in the same order when two sizes share the
    shape (index 0 of sizes 5..8 has three right siblings in each), so the proof alone cannot
    pin the size: the signed (root, size) pair does, and the verifier compares the proof's size
    with the committed one. Sizes that put the leaf out of range always fail.
    """
    tree = MerkleTree.from_leaves(leaves)
    size = tree.size
    i = data.draw(st.integers(0, size - 1), label="index")
    proof, root, leaf = tree.inclusion_proof(i), tree.root, leaves[i]
    for other in {size - 1, size + 1, size * 2, size // 2, 0, i, i + 1, *range(1, 2 * size + 2)} - {size}:
        expected = 0 <= i < other and path_shape(i, other) == path_shape(i, size)
        assert verify_inclusion(leaf, i, other, proof, root) is expected, other


def test_shared_shape_example_and_distinct_shapes() -> None:
    # The published proof for leaf 0 of 8 also verifies as leaf 0 of 5, 6 or 7 (same three right
    # siblings), and fails for 4 and 9 (two and four levels).
    index, size, proof = INCLUSION_PROOFS[1]
    ok = {n for n in range(1, 17) if verify_inclusion(LEAVES[index], index, n, proof, ROOTS[size])}
    assert ok == {5, 6, 7, 8}
    # Within one tree size every index has its own shape, so a wrong index never verifies.
    for n in range(1, 130):
        assert len({path_shape(i, n) for i in range(n)}) == n
