"""Workloads the suites create: :class:`~proxysuite.workloads.jig.ServiceJig` and its templates."""

from .jig import ServiceJig, Target

__all__ = ["ServiceJig", "Target"]
