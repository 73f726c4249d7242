"""Performance measurements of Service proxies: rule sync, programming latency, first-packet latency, load.

The pipeline is measure → frame → report: each measurement module returns tidy
rows, ``perf.frames`` stamps them with run metadata and writes Parquet/CSV under
``reports/``, and ``proxysuite.report`` turns one or more runs into the
compare-modes report.
"""

from ..errors import require_extra

require_extra("perf", "pandas", "numpy", "pyarrow", "locust", "hdrh", "psutil", "prometheus_client")
