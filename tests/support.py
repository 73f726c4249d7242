"""Helpers shared by the project's own tests (not by the suites users run)."""

from __future__ import annotations

import time


def wait_for(what: str, fn, timeout: float = 60.0, interval: float = 0.25):
    """Call ``fn`` until it returns something truthy and return that; a bounded ceiling, not a measurement."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached within {timeout:g}s (last value: {last!r})")
