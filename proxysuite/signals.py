"""SIGTERM (CI cancel, ``kill``) cleans up like Ctrl-C: the owning process unwinds its ``finally`` blocks."""

from __future__ import annotations

import os
import signal
import threading


def sigterm_as_interrupt() -> None:
    """Turn SIGTERM into KeyboardInterrupt in this process (a no-op outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            # A forked helper (pyroute2 forks to create namespaces) must die as SIGTERM says, not unwind
            # the owner's cleanup in the child: that would tear the cluster down from under the owner.
            os._exit(128 + signum)
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, handler)
