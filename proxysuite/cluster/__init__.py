"""Cluster providers: ``local`` (netns, no Docker), ``kind`` and ``existing``.

``open_cluster(config)`` brings up (or reuses) the cluster the config names and
returns a :class:`~proxysuite.cluster.base.Cluster`; ``teardown(config)``
removes what ``open_cluster`` created.
"""

from __future__ import annotations

from ..config import SuiteConfig
from .base import Cluster, Features, NodeInfo, Vantage

__all__ = ["Cluster", "Features", "NodeInfo", "Vantage", "get_provider"]


def get_provider(config: SuiteConfig):
    """Return the provider module for ``config.provider``; each has ``up(config, progress)`` and ``down(config)``."""
    if config.provider == "local":
        from .local import provider
    elif config.provider == "kind":
        from . import kind as provider
    else:
        from . import existing as provider
    return provider
