"""Click parameter types shared by the commands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from ..durations import parse_duration
from ..errors import McpKeysError

# Literals rather than imports: the library is imported only by the commands that use it.
DEFAULT_KEY_VAR = "MCP_API_KEY"
DEFAULT_ENV_PATH = ".env"


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration option (``90d``); ``never`` and ``0`` only where the option allows them."""

    name = "duration"

    def __init__(self, *, allow_never: bool = False, allow_zero: bool = False) -> None:
        self.allow_never = allow_never
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> timedelta | None:
        if isinstance(value, timedelta) or value is None:
            return value
        try:
            return parse_duration(str(value), allow_never=self.allow_never,
                                  allow_zero=self.allow_zero)
        except McpKeysError as exc:
            self.fail(str(exc), param, ctx)
