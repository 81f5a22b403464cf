"""Every wait for a PostgreSQL server has a client-side deadline.

A server whose TCP port is open but silent (a stopped process, a hung host behind a
live kernel) is never noticed by libpq: the kernel still acknowledges what is sent, so
TCP keepalives and ``tcp_user_timeout`` never fire, and ``statement_timeout`` is enforced
by the very server that does not answer. So each wait is watched by a timer: past its
deadline the socket is shut down, which wakes the waiting thread with an error and
leaves the connection broken (its owner closes it and connects again).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any, TypeVar

import psycopg

RV = TypeVar("RV")


class NoAnswer(psycopg.OperationalError):
    """The server did not answer within the connection's deadline."""


class _Guard:
    """One armed deadline: shuts the socket down unless ``done`` comes first. It holds
    its own duplicate of the socket, so it can never touch a descriptor reused since."""

    def __init__(self, fd: int, seconds: float) -> None:
        self._sock = socket.socket(fileno=os.dup(fd))
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def done(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()
        self._sock.close()


class DeadlineConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every round trip (queries, ``COMMIT``, ``LISTEN``,
    ``notifies``) fails with ``NoAnswer`` after ``deadline`` seconds of silence."""

    deadline: float = 30.0

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        """psycopg's one place of waiting for the server, with the deadline armed."""
        guard = _Guard(self.fileno(), self.deadline)
        try:
            return super().wait(gen, *args, **kwargs)
        except psycopg.OperationalError:
            if guard.fired:
                raise NoAnswer(f"no answer from the server within {self.deadline:g}s"
                               ) from None
            raise
        finally:
            guard.done()
