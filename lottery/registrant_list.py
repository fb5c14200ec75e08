"""The published registrant list: ticket, pseudonym, stratum per line, in ticket order.

Two spellings of the same list: NDJSON (one canonical JSON object per line:
{"pseudonym":"...","stratum":"...","ticket":N}) and CSV (header `ticket,pseudonym,stratum`, no
quoting: pseudonyms are hex and stratum ids are validated to need none). Never IDs or phones.
Imports only the standard library: the offline verifier reads these files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

CSV_HEADER = "ticket,pseudonym,stratum"


class ListError(ValueError):
    pass


def ndjson_line(ticket: int, pseudonym: str, stratum: str) -> str:
    return json.dumps({"pseudonym": pseudonym, "stratum": stratum, "ticket": ticket},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def csv_line(ticket: int, pseudonym: str, stratum: str) -> str:
    return f"{ticket},{pseudonym},{stratum}\n"


def read(path: Path) -> Iterator[tuple[int, str, str]]:
    """(ticket, pseudonym, stratum) per line; the format is told by the first line."""
    with path.open("r", encoding="utf-8", newline="\n") as handle:
        first = handle.readline()
        if first.rstrip("\n") == CSV_HEADER:
            yield from _read_csv(handle)
        elif first.startswith("{"):
            yield _parse_json(first, 1)
            for number, line in enumerate(handle, start=2):
                yield _parse_json(line, number)
        elif first:
            raise ListError("registrant list: expected the CSV header or NDJSON objects")


def _read_csv(handle: Iterator[str]) -> Iterator[tuple[int, str, str]]:
    for number, line in enumerate(handle, start=2):
        parts = line.rstrip("\n").split(",")
        if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()):
            raise ListError(f"registrant list line {number}: expected ticket,pseudonym,stratum")
        yield int(parts[0]), parts[1], parts[2]


def _parse_json(line: str, number: int) -> tuple[int, str, str]:
    try:
        item = json.loads(line)
        ticket, pseudonym, stratum = item["ticket"], item["pseudonym"], item["stratum"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ListError(f"registrant list line {number}: {exc}") from exc
    if type(ticket) is not int or not isinstance(pseudonym, str) or not isinstance(stratum, str):
        raise ListError(f"registrant list line {number}: wrong field types")
    return ticket, pseudonym, stratum
