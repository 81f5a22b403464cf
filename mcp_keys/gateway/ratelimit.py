"""Token buckets: at most N calls per period for each key (and service), refilled
continuously, so a burst of N is allowed and then one call every period/N."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable


class Buckets:
    """One token bucket per key."""

    def __init__(self) -> None:
        self._state: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: Hashable, count: int, period: float) -> float:
        """0.0 if a call may go now (and count it), else the seconds until one may."""
        rate = count / period
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (float(count), now))
            tokens = min(float(count), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1.0 - tokens) / rate
