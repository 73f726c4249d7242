"""Live proxy-mode migration: switch a running cluster's proxy mode and measure what traffic saw.

* :mod:`.rules`  what kube-proxy left in each datapath of a node (stale-rule audit);
* :mod:`.traffic` continuous probes and long-lived connections during the switch, and the disruption windows;
* :mod:`.report`  the per-run JSON/CSV under ``<reports-dir>/migration/``.

The switch itself is the provider's (``Cluster.migrate_proxy``, feature ``proxy_migration``).
"""
