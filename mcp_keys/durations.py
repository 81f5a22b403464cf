"""Durations as operators type them (``45s``, ``12h``, ``90d``, ``2w``, ``1y``, ``never``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import UsageError

UNITS: dict[str, timedelta] = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),
}
_PATTERN = re.compile(r"([1-9][0-9]{0,9})([smhdwy])")
# Nothing may reach past the end of year 9999, counted from today.
_LIMIT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def parse_duration(
    text: str, *, allow_never: bool = False, allow_zero: bool = False
) -> timedelta | None:
    """Parse a positive whole-number duration; ``None`` means ``never`` (when allowed)."""
    value = text.strip().lower()
    if allow_never and value == "never":
        return None
    if allow_zero and value == "0":
        return timedelta(0)
    match = _PATTERN.fullmatch(value)
    if match is None and re.fullmatch(r"(-\s*[0-9]+|0+)[smhdwy]", value):
        raise UsageError(f"invalid duration {text!r}: the duration must be positive "
                         "(e.g. 90d)")
    if match is None:
        accepted = "a whole number and a unit (s, m, h, d, w, y), e.g. 90d"
        extra = [w for w, ok in (("'never'", allow_never), ("'0'", allow_zero)) if ok]
        if extra:
            accepted += ", or " + " or ".join(extra)
        raise UsageError(f"invalid duration {text!r}: expected {accepted}")
    count, unit = int(match.group(1)), match.group(2)
    try:
        delta = UNITS[unit] * count
        too_far = datetime.now(UTC) + delta > _LIMIT
    except OverflowError:
        too_far = True
    if too_far:
        raise UsageError(f"invalid duration {text!r}: reaches past the year 9999")
    return delta


def format_duration(delta: timedelta | None) -> str:
    """The shortest exact spelling of ``delta`` that ``parse_duration`` reads back."""
    if delta is None:
        return "never"
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0"
    for unit in ("y", "w", "d", "h", "m"):
        size = int(UNITS[unit].total_seconds())
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def humanize(delta: timedelta) -> str:
    """A rough, readable span for tables: ``3d 4h``, ``12m``, ``45s``."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d {hours}h" if hours else f"{days}d"
    elif hours:
        text = f"{hours}h {minutes}m" if minutes else f"{hours}h"
    elif minutes:
        text = f"{minutes}m"
    else:
        text = f"{secs}s"
    return sign + text
