"""Typed, bounded building blocks for request bodies: integers that fit their column, datetimes in
sane years, and the `Input` base every request Struct derives from.

msgspec decodes any JSON integer, however large, and any datetime from year 1 to 9999: both then
fail deep inside (asyncpg's "out of int64 range", an OverflowError when a +14:00 offset moves
0001-01-01 before year 1) as a 500, after work may have been done. Bounded here, they fail at
decoding, as a 400 `validation_failed` naming the field, before anything else runs.

Datetimes are kept within 2000-01-01 .. 2200-01-01 UTC: every instant a campaign, a payment or a
deadline can name lies well inside it (digital-currency campaigns began in 2020; birth dates are
`date`s, not instants, and are not bounded here), and the margin of centuries on each side keeps
any offset or interval arithmetic far from datetime's year 1 and 9999 limits and well inside
PostgreSQL's timestamptz range.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)

Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]  # a bigint column
Int32 = Annotated[int, msgspec.Meta(ge=INT32_MIN, le=INT32_MAX)]  # an integer column
# Seconds of a window or grace period: up to a year, so adding it to a datetime cannot overflow.
Seconds = Annotated[float, msgspec.Meta(ge=0, le=366 * 24 * 3600)]


def check_instant(name: str, value: datetime) -> None:
    """Raise ValueError (msgspec turns it into a ValidationError) for an instant outside the range."""
    if value.tzinfo is None:  # refused where it is used, with its own code; bounded all the same
        value = value.replace(tzinfo=UTC)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"{name} must lie between {EARLIEST.year} and {LATEST.year} (UTC)")


class Input(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of request bodies: no unknown fields, and every datetime field within sane years."""

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                check_instant(name, value)
