"""The conformance catalogue's machinery: expectations, rows, the harness, forensics and the matrix.

The checks themselves live in ``suites/conformance/``; see its README.
"""

from .check import Conformance, check
from .expectations import (
    ANY_DECLARED,
    EXPECTED,
    IMPLEMENTATION_DEFINED,
    NO_REACH,
    REACH,
    REACH_ALL,
    REACH_LOCAL,
    RECORD_ONLY,
    REFUSED,
    REQUIRED,
    SRC_IP_MASQUERADED,
    SRC_IP_PRESERVED,
    STICKY,
    TIMEOUT,
    UNIFORM,
    UNREACHABLE,
    Context,
    Expectation,
    Klass,
    for_mode,
    per_mode,
)
from .rows import Row

__all__ = [
    "Conformance", "check", "Row", "Context", "Expectation", "Klass", "per_mode", "for_mode",
    "REQUIRED", "EXPECTED", "IMPLEMENTATION_DEFINED",
    "REACH", "REACH_ALL", "REACH_LOCAL", "REFUSED", "TIMEOUT", "UNREACHABLE", "NO_REACH", "RECORD_ONLY", "ANY_DECLARED",
    "SRC_IP_PRESERVED", "SRC_IP_MASQUERADED", "UNIFORM", "STICKY",
]
