from __future__ import annotations

from datetime import timedelta

import pytest

from mcp_keys.durations import format_duration, parse_duration
from mcp_keys.errors import UsageError


@pytest.mark.parametrize(("text", "expected"), [
    ("45s", timedelta(seconds=45)), ("30m", timedelta(minutes=30)),
    ("12h", timedelta(hours=12)), ("90d", timedelta(days=90)), ("2w", timedelta(weeks=2)),
    ("1y", timedelta(days=365)), (" 7D ", timedelta(days=7)),
])
def test_valid_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_never_and_zero_only_where_allowed() -> None:
    assert parse_duration("never", allow_never=True) is None
    assert parse_duration("0", allow_zero=True) == timedelta(0)
    with pytest.raises(UsageError):
        parse_duration("never")
    with pytest.raises(UsageError):
        parse_duration("0")


@pytest.mark.parametrize("text", ["", "0d", "-1d", "1.5d", "5x", "d", "90", "1e3d", "99999999y",
                                  "8000y", "1d2h", "abc", "never!"])
def test_invalid_durations(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_duration(text, allow_never=True)
    assert "invalid duration" in str(info.value)


@pytest.mark.parametrize("delta", [timedelta(seconds=45), timedelta(days=90),
                                   timedelta(weeks=3), timedelta(days=730), None,
                                   timedelta(hours=25)])
def test_format_round_trips(delta: timedelta | None) -> None:
    assert parse_duration(format_duration(delta), allow_never=True) == delta
