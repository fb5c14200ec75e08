"""The published registrant list: ticket, pseudonym, stratum per line, in ticket order.

Two spellings of the same list: NDJSON (one canonical JSON object per line:
{"pseudonym":"...","stratum":"...","ticket":N}) and CSV (header `ticket,pseudonym,stratum`, no
quoting: pseudonyms are hex and stratum ids are validated to need none). Never IDs or phones.
Every line ends with LF, the last one too. A reader accepts exactly what the writers here write
and nothing else (docs/draw-spec.md §12.4, rules R12.4.1-R12.4.3): a line with an extra or a
repeated key, a ticket spelled `01`, a missing final newline are refused, so two readers can never
hash different leaves from the same file.
Imports only the standard library: the offline verifier reads these files.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lottery.canonical import dumps
from lottery.violation import Violation

CSV_HEADER = "ticket,pseudonym,stratum"
MAX_TICKET = 2**64 - 1
LAYOUT = "R12.4.1"
CSV_LINE = "R12.4.2"
NDJSON_LINE = "R12.4.3"

# A canonical line whose strings need no escapes: the common case, parsed without a JSON decoder.
_PLAIN_LINE = re.compile(rb'\{"pseudonym":"([^"\\\x00-\x1f]*)","stratum":"([^"\\\x00-\x1f]*)",'
                         rb'"ticket":(0|[1-9][0-9]{0,19})\}')


class ListError(Violation):
    pass


def ndjson_line(ticket: int, pseudonym: str, stratum: str) -> str:
    return json.dumps({"pseudonym": pseudonym, "stratum": stratum, "ticket": ticket},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def csv_line(ticket: int, pseudonym: str, stratum: str) -> str:
    return f"{ticket},{pseudonym},{stratum}\n"


def csv_ticket(number: bytes) -> int:
    """A CSV ticket: ASCII digits, no sign, no leading zero, below 2^64 (one spelling per ticket)."""
    if not number.isdigit() or (number[0] == 0x30 and len(number) > 1) or len(number) > 20:
        raise ListError(CSV_LINE, f"ticket {number.decode(errors='replace')!r} is not a canonical decimal number")
    ticket = int(number)
    if ticket > MAX_TICKET:
        raise ListError(CSV_LINE, f"ticket {ticket} does not fit in 64 bits")
    return ticket


def csv_row(line: bytes) -> tuple[int, bytes, bytes]:
    parts = line.split(b",")
    if len(parts) != 3:
        raise ListError(CSV_LINE, f"line {line[:60]!r} does not split into ticket,pseudonym,stratum")
    return csv_ticket(parts[0]), parts[1], parts[2]


def ndjson_row(line: bytes) -> tuple[int, bytes, bytes]:
    """One NDJSON line: exactly the canonical JSON of {pseudonym, stratum, ticket}."""
    plain = _PLAIN_LINE.fullmatch(line)
    if plain is not None:
        ticket = int(plain.group(3))
        if ticket > MAX_TICKET:
            raise ListError(NDJSON_LINE, f"ticket {ticket} does not fit in 64 bits")
        return ticket, plain.group(1), plain.group(2)
    try:
        item = json.loads(line, object_pairs_hook=_refuse_repeats, parse_float=_refuse_float)
    except (ValueError, RecursionError) as exc:
        raise ListError(NDJSON_LINE, f"line {line[:60]!r} is not a JSON object: {exc}") from None
    if not isinstance(item, dict) or set(item) != {"pseudonym", "stratum", "ticket"}:
        raise ListError(NDJSON_LINE, f"line {line[:60]!r} must hold exactly pseudonym, stratum and ticket")
    ticket, pseudonym, stratum = item["ticket"], item["pseudonym"], item["stratum"]
    if type(ticket) is not int or not isinstance(pseudonym, str) or not isinstance(stratum, str):
        raise ListError(NDJSON_LINE, f"line {line[:60]!r}: ticket must be an integer, the others strings")
    if not 0 <= ticket <= MAX_TICKET:
        raise ListError(NDJSON_LINE, f"ticket {ticket} does not fit in 64 bits")
    try:
        canonical = dumps(item)
    except ValueError as exc:  # a lone surrogate has no UTF-8 form
        raise ListError(NDJSON_LINE, f"line {line[:60]!r}: {exc}") from None
    if canonical != line:
        raise ListError(NDJSON_LINE, f"line {line[:60]!r} is not canonical JSON (expected {canonical[:60]!r})")
    return ticket, pseudonym.encode(), stratum.encode()


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"repeated key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _refuse_float(text: str) -> Any:
    raise ValueError(f"number {text} is not an integer")
