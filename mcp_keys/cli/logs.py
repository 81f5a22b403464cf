"""The validator speaks through ``logging``; in the CLI its messages become warning lines."""

from __future__ import annotations

import logging

from .render import warning


class StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        warning(record.getMessage())


def configure_logging() -> None:
    """Route the ``mcp_keys`` logger's warnings and errors to stderr, once."""
    logger = logging.getLogger("mcp_keys")
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        logger.addHandler(StderrHandler())
        logger.setLevel(logging.WARNING)
        logger.propagate = False
