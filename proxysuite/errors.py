"""Errors the suite raises for bad input or an unusable environment.

Every error is one line that says what is wrong and how to fix it, so that a
user who runs ``proxysuite cluster up`` or ``pytest`` sees the remedy without
reading a traceback.
"""

from __future__ import annotations


class SuiteError(Exception):
    """A problem the user can fix; ``str()`` is ``"<what> (fix: <fix>)"``."""

    def __init__(self, what: str, fix: str):
        super().__init__(what, fix)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what} (fix: {self.fix})"


class Unsupported(SuiteError):
    """The requested mode, provider or vantage cannot exist here.

    pytest turns this into a skip whose reason is the message; the CLI prints it
    and exits non-zero. It is never a pass.
    """


class ProbeError(OSError):
    """Nothing could be probed or fetched: the one "could not probe" error of every provider.

    Raised by ``Cluster.proxy_http`` when nothing answers on the node (local: the connection in the
    node's namespace failed; kind/existing: the request from a host-network pod failed) and by vantages
    that cannot run a probe at all (as opposed to observing a refused or timed-out connection). It is an
    ``OSError``, so code that treats "the endpoint did not answer" as an observation catches it the same
    way on every provider.
    """
