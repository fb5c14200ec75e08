"""RFC 3797 selection: the RFC's worked example, key formatting, input checks, a naive reference."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery.rfc3797 import (
    MAX_SELECTIONS,
    canonical_key,
    select,
    select_positions,
    selection_hash,
)

# RFC 3797, section 6 ("Fully Worked Example"). Pool of 25 volunteers, numbered in the published
# order; random sources: one lottery number 9319, then the draws 2 5 12 8 10, then 9 18 26 34 41 45.
# Key string: 9319./2.5.8.10.12./9.18.26.34.41.45./
# The RFC's output table (its reference code's format), transcribed from the reference results in
# richsalz/ietf-rfc3797-code (ref.results); the same digests and picks appear in the RFC 3797
# tests of Algorithm::Voting::Sortition and votelib:
#   index        hex value of MD5        div  selected
#    1  990DD0A5692A029A98B5E01AA28F3459  25  -> 17 <-
#    2  3691E55CB63FCC37914430B2F70B5EC6  24  ->  7 <-
#    3  FE814EDF564C190AC1D25753979990FA  23  ->  2 <-
#    4  1863CCACEB568C31D7DDBDF1D4E91387  22  -> 16 <-
#    5  F4AB33DF4889F0AF29C513905BE1D758  21  -> 25 <-
#    6  13EAEB529F61ACFB9A29D0BA3A60DE4A  20  -> 23 <-
#    7  992DB77C382CA2BDB9727001F3CDCCD9  19  ->  8 <-
#    8  63AB4258ECA922976811C7F55C383CE7  18  -> 24 <-
#    9  DFBC5AC97CED01B3A6E348E3CC63F40D  17  -> 19 <-
#   10  31CB111C4A4EBE9287CEAE16FE51B909  16  -> 13 <-
#   11  07FA46C122F164C215BBC72793B189A3  15  -> 22 <-
#   12  AC52F8D75CCBE2E61AFEB3387637D501  14  ->  5 <-
#   13  53306F73E14FC0B2FBF434218D25948E  13  -> 18 <-
#   14  B5D1403501A81F9A47318BE7893B347C  12  ->  9 <-
#   15  85B10B356AA06663EF1B1B407765100A  11  ->  1 <-
#   16  3269E6CE559ABD57E2BA6AAB495EB9BD  10  ->  4 <-
RFC_SOURCES: list[list[int]] = [[9319], [2, 5, 12, 8, 10], [9, 18, 26, 34, 41, 45]]
RFC_KEY = "9319./2.5.8.10.12./9.18.26.34.41.45./"
RFC_POOL = [
    "John", "Mary", "Bashful", "Dopey", "Sleepy",
    "Grouchy", "Doc", "Sneazy", "Handsome", "Cassandra",
    "Pollyanna", "Pendragon", "Pandora", "Faith", "Hope",
    "Charity", "Lee", "Longsuffering", "Chastity", "Smith",
    "Pride", "Sloth", "Envy", "Anger", "Kasczynski",
]  # fmt: skip
RFC_DIGESTS = [
    "990DD0A5692A029A98B5E01AA28F3459",
    "3691E55CB63FCC37914430B2F70B5EC6",
    "FE814EDF564C190AC1D25753979990FA",
    "1863CCACEB568C31D7DDBDF1D4E91387",
    "F4AB33DF4889F0AF29C513905BE1D758",
    "13EAEB529F61ACFB9A29D0BA3A60DE4A",
    "992DB77C382CA2BDB9727001F3CDCCD9",
    "63AB4258ECA922976811C7F55C383CE7",
    "DFBC5AC97CED01B3A6E348E3CC63F40D",
    "31CB111C4A4EBE9287CEAE16FE51B909",
    "07FA46C122F164C215BBC72793B189A3",
    "AC52F8D75CCBE2E61AFEB3387637D501",
    "53306F73E14FC0B2FBF434218D25948E",
    "B5D1403501A81F9A47318BE7893B347C",
    "85B10B356AA06663EF1B1B407765100A",
    "3269E6CE559ABD57E2BA6AAB495EB9BD",
]
RFC_POSITIONS = [17, 7, 2, 16, 25, 23, 8, 24, 19, 13, 22, 5, 18, 9, 1, 4]


def naive_positions(key: str, pool_size: int, count: int) -> list[int]:
    """The RFC's reference procedure written plainly: pop from the list of remaining positions."""
    remaining = list(range(1, pool_size + 1))
    picked = []
    for j in range(count):
        bracket = j.to_bytes(2, "big")
        value = int.from_bytes(hashlib.md5(bracket + key.encode() + bracket).digest(), "big")
        picked.append(remaining.pop(value % len(remaining)))
    return picked


def test_rfc_example_key_string() -> None:
    assert canonical_key(RFC_SOURCES) == RFC_KEY


def test_rfc_example_digests() -> None:
    for j, digest in enumerate(RFC_DIGESTS):
        assert selection_hash(RFC_KEY, j) == int(digest, 16)


def test_rfc_example_remainders_and_divisors() -> None:
    # Each pick is the (value mod div)-th remaining volunteer, div counting down from 25.
    remaining = list(range(1, 26))
    for j, (digest, position) in enumerate(zip(RFC_DIGESTS, RFC_POSITIONS, strict=True)):
        assert len(remaining) == 25 - j
        assert remaining.pop(int(digest, 16) % len(remaining)) == position


def test_rfc_example_positions() -> None:
    assert select_positions(RFC_KEY, 25, 16) == RFC_POSITIONS
    # Asking for fewer yields a prefix: later picks never change earlier ones.
    assert select_positions(RFC_KEY, 25, 10) == RFC_POSITIONS[:10]


def test_rfc_example_volunteers() -> None:
    assert select(RFC_KEY, RFC_POOL, 10) == [
        "Lee", "Doc", "Mary", "Charity", "Kasczynski",
        "Envy", "Sneazy", "Anger", "Chastity", "Pandora",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ([[3, 1, 2]], "1.2.3./"),
        ([[10, 9, 100]], "9.10.100./"),  # numeric order, not text order
        ([[7, 7, 3]], "3.7.7./"),  # repeated draws are kept
        ([[9319]], "9319./"),
        ([[]], "/"),
        ([], ""),
        (["abc"], "abc/"),
        ([" 12.5 "], " 12.5 /"),  # a string source is used as given, nothing stripped
        (["9319"], "9319/"),  # a string gets no "." appended
        ([[2, 1], "x.y", [5]], "1.2./x.y/5./"),
    ],
)
def test_canonical_key_format(sources: list[list[int] | str], expected: str) -> None:
    assert canonical_key(sources) == expected


def test_canonical_key_does_not_reorder_sources() -> None:
    assert canonical_key([[5], [1]]) == "5./1./"


@pytest.mark.parametrize("bad", [[1.5], ["12"]])
def test_canonical_key_rejects_non_integers(bad: list[object]) -> None:
    with pytest.raises(TypeError):
        canonical_key([bad])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("pool_size", "count"),
    [(5, 6), (0, 1), (-1, 0), (5, -1), (-3, -4), (MAX_SELECTIONS + 5, MAX_SELECTIONS + 1)],
)
def test_select_positions_rejects_bad_sizes(pool_size: int, count: int) -> None:
    with pytest.raises(ValueError):
        select_positions(RFC_KEY, pool_size, count)


def test_select_rejects_count_above_pool() -> None:
    with pytest.raises(ValueError):
        select(RFC_KEY, ["a", "b"], 3)


@pytest.mark.parametrize("j", [-1, MAX_SELECTIONS])
def test_selection_hash_rejects_j_outside_two_bytes(j: int) -> None:
    with pytest.raises(ValueError):
        selection_hash(RFC_KEY, j)


def test_selection_hash_brackets_with_two_byte_j() -> None:
    j = 0x1234
    expected = hashlib.md5(b"\x12\x34" + RFC_KEY.encode() + b"\x12\x34").digest()
    assert selection_hash(RFC_KEY, j) == int.from_bytes(expected, "big")


def test_empty_and_full_selection() -> None:
    assert select_positions(RFC_KEY, 0, 0) == []
    assert select(RFC_KEY, [], 0) == []
    assert sorted(select_positions(RFC_KEY, 25, 25)) == list(range(1, 26))
    assert select_positions(RFC_KEY, 25, 25) == naive_positions(RFC_KEY, 25, 25)


def test_larger_pool_matches_naive() -> None:
    assert select_positions(RFC_KEY, 5_000, 2_000) == naive_positions(RFC_KEY, 5_000, 2_000)


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(max_size=40),
    pool_and_count=st.integers(min_value=0, max_value=300).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n))
    ),
)
def test_select_positions_matches_naive(key: str, pool_and_count: tuple[int, int]) -> None:
    pool_size, count = pool_and_count
    positions = select_positions(key, pool_size, count)
    assert len(positions) == count
    assert len(set(positions)) == count
    assert all(1 <= p <= pool_size for p in positions)
    assert positions == naive_positions(key, pool_size, count)
