"""The registrant list's writers and its strict reader agree: every line the service writes is read
back to the same registrant, and every other spelling of it is refused (docs/draw-spec.md §12.4)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lottery.registrant_list import ListError, csv_line, csv_row, ndjson_line, ndjson_row

TICKETS = st.integers(0, 2**64 - 1)
STRATA = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
# Any text the leaf allows (1..255 bytes of UTF-8); the CSV spelling cannot carry , or a line break.
PSEUDONYMS = st.text(min_size=1, max_size=60).filter(lambda s: len(s.encode()) <= 255)


@given(ticket=TICKETS, pseudonym=PSEUDONYMS, stratum=STRATA)
def test_an_ndjson_line_reads_back_to_its_registrant(ticket: int, pseudonym: str, stratum: str) -> None:
    line = ndjson_line(ticket, pseudonym, stratum).encode()
    assert line.endswith(b"\n")
    assert ndjson_row(line[:-1]) == (ticket, pseudonym.encode(), stratum.encode())


@given(ticket=TICKETS, pseudonym=PSEUDONYMS.filter(lambda s: not {",", "\n", "\r"} & set(s)), stratum=STRATA)
def test_a_csv_line_reads_back_to_its_registrant(ticket: int, pseudonym: str, stratum: str) -> None:
    line = csv_line(ticket, pseudonym, stratum).encode()
    assert line.endswith(b"\n")
    assert csv_row(line[:-1]) == (ticket, pseudonym.encode(), stratum.encode())


@given(ticket=TICKETS, pseudonym=PSEUDONYMS, stratum=STRATA, data=st.data())
def test_any_other_spelling_of_an_ndjson_line_is_refused(ticket: int, pseudonym: str, stratum: str,
                                                         data: st.DataObject) -> None:
    item = {"pseudonym": pseudonym, "stratum": stratum, "ticket": ticket}
    spelling = data.draw(st.sampled_from([
        json.dumps({"ticket": ticket, "pseudonym": pseudonym, "stratum": stratum},
                   separators=(",", ":"), ensure_ascii=False),                      # keys out of order
        json.dumps(item, sort_keys=True),                                          # spaces
        json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=True).replace("}", ',"x":1}'),
        json.dumps({**item, "extra": None}, sort_keys=True, separators=(",", ":")),
        '{"pseudonym":"x",' + ndjson_line(ticket, pseudonym, stratum)[1:-1],       # a repeated key
        ndjson_line(ticket, pseudonym, stratum)[:-1].replace(f'"ticket":{ticket}', f'"ticket":{ticket}.0'),
        ndjson_line(ticket, pseudonym, stratum)[:-1].replace(f'"ticket":{ticket}', f'"ticket":"{ticket}"'),
    ]), label="spelling")
    with pytest.raises(ListError) as refused:
        ndjson_row(spelling.encode())
    assert refused.value.rule == "R12.4.3"


@pytest.mark.parametrize("number", [b"01", b"00", b"+1", b"-1", b" 1", b"1 ", b"", "\u0661".encode(),
                                    b"18446744073709551616", b"1" * 5000])
def test_a_csv_ticket_in_any_other_spelling_is_refused(number: bytes) -> None:
    with pytest.raises(ListError) as refused:
        csv_row(number + b",abc,d1")
    assert refused.value.rule == "R12.4.2"
