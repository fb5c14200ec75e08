"""Canonical JSON and timestamps: one spelling per value, so signed bytes can be rebuilt."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lottery.canonical import NotCanonical, dumps, loads_strict
from lottery.statements import parse_timestamp, timestamp

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25,
)


def test_sorted_keys_no_whitespace() -> None:
    value = {"b": [1, {"d": None, "c": True}], "a": "x", "": 0}
    assert dumps(value) == b'{"":0,"a":"x","b":[1,{"c":true,"d":null}]}'
    assert dumps((1, 2)) == b"[1,2]"
    assert dumps(-0) == b"0"
    assert dumps(2**80) == b"1208925819614629174706176"


def test_utf8_non_ascii_is_kept_and_controls_escaped() -> None:
    assert dumps({"名": "é—\u2028😀"}) == '{"名":"é—\u2028😀"}'.encode()
    assert dumps("a\nb\"\\\x01") == b'"a\\nb\\"\\\\\\u0001"'
    assert loads_strict('{"名":"é"}'.encode()) == {"名": "é"}


@pytest.mark.parametrize("value", [1.0, 0.5, float("nan"), float("inf"), [1, 2.5], {"a": {"b": [0.0]}}])
def test_floats_refused(value: Any) -> None:
    with pytest.raises(NotCanonical):
        dumps(value)


@pytest.mark.parametrize("value", [{1: "a"}, {(1,): 2}, b"bytes", {1, 2}, datetime(2024, 1, 1, tzinfo=UTC), object()])
def test_non_json_values_refused(value: Any) -> None:
    with pytest.raises(NotCanonical):
        dumps(value)


@pytest.mark.parametrize("data", [
    b"1.0", b"1e3", b"-0.0", b'{"a":1.5}', b"NaN", b"Infinity", b'[-Infinity]',  # floats
    b"-0", b'"\\u00e9"', b'"\\/"', b'"\\u0041"', b'"\\ud83d\\ude00"',             # second spellings
    b'{"b":1,"a":2}', b'{"a":1,"a":1}', b"[1, 2]", b'{"a": 1}', b" 1", b"1\n",    # order, whitespace
    b"01", b"", b"\xef\xbb\xbf1", b"\xff", b'"\\ud800"', b"{'a':1}", b"[1,]",      # not JSON / UTF-8
])
def test_non_canonical_input_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        loads_strict(data)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_round_trip(value: Any) -> None:
    data = dumps(value)
    assert loads_strict(data) == value
    assert dumps(loads_strict(data)) == data
    assert json.loads(data) == value


@settings(max_examples=200, deadline=None)
@given(json_values, st.sampled_from([{"indent": 1}, {"separators": (", ", ": ")}, {"ensure_ascii": True}]))
def test_other_spellings_are_refused_unless_identical(value: Any, options: dict[str, Any]) -> None:
    data = json.dumps(value, **options).encode()
    if data == dumps(value):
        assert loads_strict(data) == value
    else:
        with pytest.raises(NotCanonical):
            loads_strict(data)


# --- timestamps -------------------------------------------------------------------------------

def test_timestamp_spelling() -> None:
    at = datetime(2023, 9, 1, 8, 5, 3, 7, tzinfo=timezone(timedelta(hours=8)))
    assert timestamp(at) == "2023-09-01T00:05:03.000007Z"
    assert parse_timestamp("2023-09-01T00:05:03.000007Z") == at
    with pytest.raises(ValueError, match="time zone"):
        timestamp(datetime(2023, 9, 1))


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-9, minutes=-30))])))
def test_timestamp_round_trip(at: datetime) -> None:
    text = timestamp(at)
    assert parse_timestamp(text) == at
    assert timestamp(parse_timestamp(text)) == text
    assert len(text) == 27 and text.endswith("Z")


@pytest.mark.parametrize("text", [
    "2023-09-01T00:00:00Z", "2023-09-01T00:00:00.000Z", "2023-09-01T00:00:00.000000+00:00",
    "2023-09-01T00:00:00.000000z", "2023-09-01 00:00:00.000000Z", "2023-9-01T00:00:00.000000Z",
    "2023-09-1T00:00:00.000000Z", "2023-09-01T0:00:00.000000Z", "2023-09-01T00:00:00.00000Z",
    "2023-09-01T00:00:00.0000000Z", "2023-09-01T00:00:00.000000Z ", " 2023-09-01T00:00:00.000000Z",
    "2023-09-01T24:00:00.000000Z", "2023-02-29T00:00:00.000000Z", "2023-09-01T23:59:60.000000Z",
    "2023-09-01T00:00:00.000000", "",
])
def test_non_canonical_timestamps_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


@pytest.mark.parametrize("year", [1, 9, 99, 999])
def test_timestamp_pads_years_before_1000(year: int) -> None:
    at = datetime(year, 1, 1, tzinfo=UTC)
    assert timestamp(at) == f"{year:04d}-01-01T00:00:00.000000Z"
    assert parse_timestamp(timestamp(at)) == at
