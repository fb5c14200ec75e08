"""RFC 6962 / RFC 9162 Merkle trees: roots, inclusion proofs and their verification.

leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right). The tree is built
level by level, an unpaired last node moving up unchanged, which gives exactly RFC 6962's
split-at-the-largest-power-of-two tree. Levels are kept in contiguous bytearrays (32 bytes per
node), so ten million leaves take ~640 MB and any number of proofs can be answered afterwards.
Imports only the standard library: the offline verifier uses this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def hash_leaves(leaves: Iterable[bytes]) -> bytearray:
    """Concatenated leaf hashes, in order."""
    out = bytearray()
    extend = out.extend
    sha = _sha256
    for leaf in leaves:
        extend(sha(b"\x00" + leaf).digest())
    return out


def next_level(level: bytes | bytearray) -> bytearray:
    count = len(level) // HASH_SIZE
    view = memoryview(level)
    sha = _sha256
    prefix = b"\x01"
    pairs = count // 2
    out = bytearray(b"".join(
        sha(prefix + view[i:i + 64]).digest() for i in range(0, pairs * 64, 64)  # type: ignore[operator]
    ))
    if count % 2:
        out.extend(view[(count - 1) * HASH_SIZE:count * HASH_SIZE])
    return out


class MerkleTree:
    """A built tree: every level kept, so proofs cost a few slices."""

    def __init__(self, leaf_hashes: bytes | bytearray) -> None:
        if len(leaf_hashes) % HASH_SIZE:
            raise ValueError("leaf hashes must be 32 bytes each")
        self.levels: list[bytearray] = [bytearray(leaf_hashes)]
        while len(self.levels[-1]) > HASH_SIZE:
            self.levels.append(next_level(self.levels[-1]))

    @classmethod
    def from_leaves(cls, leaves: Iterable[bytes]) -> MerkleTree:
        return cls(hash_leaves(leaves))

    @classmethod
    def from_levels(cls, levels: list[bytearray]) -> MerkleTree:
        """A tree whose levels were built elsewhere (e.g. in parallel); trusted as given."""
        tree = cls.__new__(cls)
        tree.levels = levels
        return tree

    @property
    def size(self) -> int:
        return len(self.levels[0]) // HASH_SIZE

    @property
    def root(self) -> bytes:
        if self.size == 0:
            return _sha256(b"").digest()
        return bytes(self.levels[-1][:HASH_SIZE])

    def leaf_hash_at(self, index: int) -> bytes:
        return bytes(self.levels[0][index * HASH_SIZE:(index + 1) * HASH_SIZE])

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The RFC 9162 audit path for leaf `index` (0-based)."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} outside a tree of {self.size}")
        path: list[bytes] = []
        i = index
        for level in self.levels[:-1]:
            count = len(level) // HASH_SIZE
            sibling = i ^ 1
            if sibling < count:
                path.append(bytes(level[sibling * HASH_SIZE:(sibling + 1) * HASH_SIZE]))
            i //= 2
        return path


def root_of(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH by its recursive definition: the reference the level-wise builder is tested against."""
    n = len(leaves)
    if n == 0:
        return _sha256(b"").digest()
    if n == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


def root_from_inclusion_proof(leaf_hash_value: bytes, index: int, tree_size: int,
                              proof: Sequence[bytes]) -> bytes | None:
    """RFC 9162 section 2.1.3.2; None when the proof cannot be for this index and size."""
    if not 0 <= index < tree_size or len(leaf_hash_value) != HASH_SIZE:
        return None
    fn, sn = index, tree_size - 1
    r = leaf_hash_value
    for p in proof:
        if len(p) != HASH_SIZE or sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Does `leaf` sit at `index` of the tree of `tree_size` leaves whose root is `root`?"""
    computed = root_from_inclusion_proof(leaf_hash(leaf), index, tree_size, proof)
    return computed is not None and computed == root
