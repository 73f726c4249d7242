"""Published figures the report sets beside ours (see /work/shared/research/perf-anchors.md).

Every number here is quoted with its source and how it was obtained; the
KEP-3866 values are read off the chart's bar geometry (± ~4 µs).
"""

KEP3866_SOURCE = ("KEP-3866 / kubernetes.io blog 2025-02-28 \"NFTables mode for kube-proxy\", "
                  "chart iptables-vs-nftables.svg (values chart-read, ±4 µs)")

KEP3866_FIRST_PACKET_US = {
    # services: {mode: (p01, p50, p90, p99)} in µs
    5000: {"iptables": (16, 47, 118, 154), "nftables": (8, 12, 20, 35)},
    10000: {"iptables": (10, 59, 185, 260), "nftables": (8, 12, 20, 35)},
    30000: {"iptables": (39, 272, 488, 713), "nftables": (8, 12, 20, 35)},
}

KEP3866_SLOPE_NS_PER_RULE = (22.0, 24.0)
"""(p99_iptables − p99_nftables) / services at 5k, 10k and 30k: ≈ 22–24 ns per KUBE-SERVICES rule (derived)."""

NPL_METRIC_BUCKET_S = 0.25
"""kube-proxy's network programming latency histogram cannot resolve below 250 ms."""

LOCUST_ROUNDING = "Locust's own stats round to whole ms below 100 ms (10 ms below 1 s); this report uses raw request-event timings."
