"""Reports built from perf run frames (``proxysuite.perf.frames``).

``proxysuite report compare-modes RESULTS...`` (:func:`proxysuite.report.compare.main`)
writes a self-contained HTML report, PNG charts and a Markdown summary.
"""

from ..errors import require_extra

require_extra("perf", "pandas", "numpy", "pyarrow", "matplotlib")
