"""Cluster providers: ``local`` (netns, no Docker), ``kind`` and ``existing``.

``get_provider(name)`` returns the :class:`~proxysuite.cluster.base.Provider`
registered under ``name`` in :data:`~proxysuite.cluster.base.PROVIDERS`; its
``up(config, progress, owner_pid)`` brings up (or reuses) the cluster the config
names and returns a :class:`~proxysuite.cluster.base.Cluster`, ``down(config)``
removes what ``up`` created, ``status(config)`` describes it, ``janitor()``
sweeps what crashed runs left and ``clusters()`` lists what this machine runs.
"""

from __future__ import annotations

from .base import PROVIDERS, Cluster, ClusterEntry, Features, NodeInfo, Provider, Vantage, get_provider

__all__ = ["PROVIDERS", "Cluster", "ClusterEntry", "Features", "NodeInfo", "Provider", "Vantage", "get_provider"]
