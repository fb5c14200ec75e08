"""Bulk registration of merchants from a CSV file: all of the file or none of it.

The file is UTF-8 (a byte-order mark is allowed), its first line exactly

    id,name,category,district,settlement_account

and then one merchant per line. The parse is strict: a line with the wrong number of fields, a
field that breaks the registry's rules, an id repeated in the file or already registered makes
the whole file refused, with every bad line reported by its line number (the first
`MAX_REPORTED_ERRORS`), so the operator fixes the file and imports it again; nothing of a refused
file is stored. A partial import would leave the operator to work out which merchants hold keys.

An accepted file is stored in one transaction with one INSERT over arrays, and one audit entry
that names the file by its SHA-256. Each merchant gets a new key pair; the private seeds are
handed to `before_commit` (the CLI writes them to the operator's file there, so a failed write
stores nothing) and returned once.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec

from kernel import audit_log
from kernel.errors import InvalidInput
from merchants import registry
from merchants.registry import IssuedKey, MerchantSpec

HEADER = ("id", "name", "category", "district", "settlement_account")
MAX_ROWS = 100_000
MAX_BYTES = 16 * 1024 * 1024
MAX_REPORTED_ERRORS = 100


class LineError(msgspec.Struct, frozen=True):
    line: int
    error: str


class ImportRefused(InvalidInput):
    status = 422
    code = "csv_invalid"
    title = "The merchant file was refused; nothing was imported"


class ImportResult(msgspec.Struct, frozen=True):
    imported: int
    file_sha256: str
    keys: list[IssuedKey]


def parse(raw: bytes) -> list[tuple[int, MerchantSpec]]:
    """Every merchant in the file with its line number, or ImportRefused listing the bad lines."""
    if len(raw) > MAX_BYTES:
        raise ImportRefused(f"the file is larger than {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ImportRefused("the file is not UTF-8", errors=[{"line": line, "error": "not UTF-8"}]) from exc
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    errors: list[LineError] = []
    specs: list[tuple[int, MerchantSpec]] = []
    first_line: dict[str, int] = {}
    try:
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise ImportRefused(f"the first line must be {','.join(HEADER)}",
                                errors=[{"line": 1, "error": "bad header"}])
        for fields in reader:
            line = reader.line_num
            problem = _line_problem(fields, first_line, line)
            if problem is None:
                spec = MerchantSpec(*fields)
                first_line[spec.id] = line
                specs.append((line, spec))
            elif problem:
                errors.append(LineError(line, problem))
            if len(specs) + len(errors) > MAX_ROWS:
                raise ImportRefused(f"more than {MAX_ROWS} merchants in one file")
    except csv.Error as exc:
        errors.append(LineError(reader.line_num, f"CSV syntax: {exc}"))
    if errors:
        raise ImportRefused(f"{len(errors)} bad line(s); nothing was imported",
                            errors=msgspec.to_builtins(errors[:MAX_REPORTED_ERRORS]))
    if not specs:
        raise ImportRefused("the file has no merchants")
    return specs


def _line_problem(fields: list[str], first_line: dict[str, int], line: int) -> str | None:
    """Why this line is bad; '' for a blank line (skipped); None when good."""
    if not fields or fields == [""]:
        return ""
    if len(fields) != len(HEADER):
        return f"{len(fields)} fields, expected {len(HEADER)}"
    problem = registry.spec_problem(MerchantSpec(*fields))
    if problem is not None:
        return problem
    if fields[0] in first_line:
        return f"id {fields[0]} repeats line {first_line[fields[0]]}"
    return None


async def import_merchants(conn: asyncpg.Connection, raw: bytes, actor: str,
                           before_commit: Callable[[list[IssuedKey]], Awaitable[Any]] | None = None
                           ) -> ImportResult:
    lines = parse(raw)
    specs = [spec for _, spec in lines]
    pairs = [registry.new_key(spec.id) for spec in specs]
    keys = [issued for _, issued in pairs]
    digest = hashlib.sha256(raw).hexdigest()
    async with conn.transaction():
        taken = await registry.insert_many(conn, specs, [key.public_bytes for key, _ in pairs])
        if taken:
            line_of = {spec.id: line for line, spec in lines}
            errors = sorted((LineError(line_of[i], f"merchant {i} is already registered") for i in taken),
                            key=lambda e: e.line)
            raise ImportRefused(f"{len(taken)} merchant(s) already registered; nothing was imported",
                                errors=msgspec.to_builtins(errors[:MAX_REPORTED_ERRORS]))
        await audit_log.append(conn, actor=actor, action="merchant.import", subject=f"sha256:{digest}",
                               details={"merchants": len(specs), "first": specs[0].id, "last": specs[-1].id})
        if before_commit is not None:
            await before_commit(keys)
    return ImportResult(len(specs), digest, keys)
