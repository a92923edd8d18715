"""User-typed times (`--from -15m`, `now`, ISO 8601) as nanoseconds since the epoch."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

from bpfnetlog.query.errors import QueryError

_UNITS_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_RELATIVE = re.compile(r"(?:now)?\s*([+-])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)


def parse_time(s: str | int, now_ns: int | None = None) -> int:
    """ns since the epoch from an int (ns) or a string.

    Strings: `now`; relative `-15m`, `now-2h`, `+30s` (units ms s m h d w);
    a number (its size tells the unit: s, ms, us or ns); or ISO 8601 such as
    `2026-11-22T10:00:00` (local time unless it carries an offset or `Z`).
    """
    if isinstance(s, int):
        return s
    now_ns = time.time_ns() if now_ns is None else now_ns
    text = s.strip()
    if text.lower() == "now":
        return now_ns
    m = _RELATIVE.fullmatch(text)
    if m:
        delta = round(float(m[2]) * _UNITS_NS[m[3].lower()])
        return now_ns + delta if m[1] == "+" else now_ns - delta
    if re.fullmatch(r"\d+", text):
        number = int(text)
        for limit, scale in ((10**17, 1), (10**14, 10**3), (10**11, 10**6)):
            if number >= limit:
                return number * scale
        return number * 10**9
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            "not a time: use now, -15m, 2026-11-22T10:00:00 or a Unix timestamp", 0, s
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # the user's local time
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000
