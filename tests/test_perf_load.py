"""perf.load with real Locust against a real HTTP server on loopback.

Bounded: every run here is at most 3 s of load and 50,000 requests, and the
only target is 127.0.0.1.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from proxysuite.perf.load import LoadSpec, check_target, run_load

SERVER = Path(__file__).with_name("perf_loopback_server.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port_file = tmp_path_factory.mktemp("srv") / "port"
    proc = subprocess.Popen([sys.executable, str(SERVER), str(port_file)])
    try:
        deadline = time.monotonic() + 10
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"loopback server did not start within 10s (exit code {proc.poll()})")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}"
    finally:
        proc.kill()
        proc.wait()


def test_constant_throughput_keeps_raw_microsecond_timings(server, tmp_path):
    res = run_load(LoadSpec(url=f"{server}/x", users=4, duration_s=3, rps=200), tmp_path)
    s = res.summary
    assert s["errors"] == 0
    assert 150 <= s["throughput_rps"] <= 230, s  # constant_throughput paces each user at 50 rps
    # Raw timings are not Locust's whole-millisecond buckets: sub-ms values with fractional µs.
    us = res.samples["response_us"].to_numpy()
    assert (us < 1000).any() and not np.allclose(us % 1000, 0)
    assert s["p50_us"] <= s["p90_us"] <= s["p99_us"] <= s["p99.9_us"]
    assert not res.generator_bound, s["generator_bound_reason"]
    rows = {r["metric"]: r for r in res.rows()}
    assert rows["locust.p99_us"]["unit"] == "us" and rows["locust.throughput_rps"]["unit"] == "rps"


def test_saturated_generator_is_flagged(server, tmp_path):
    # 30 users with no wait, each reading 256 KiB answers the server sends from one buffer:
    # Locust runs out of CPU long before the server does.
    res = run_load(LoadSpec(url=f"{server}/big", users=30, duration_s=3, max_requests=50_000), tmp_path)
    assert res.summary["errors"] == 0
    assert res.generator_bound, res.summary
    assert "CPU" in res.summary["generator_bound_reason"]


def test_steps_and_request_cap(server, tmp_path):
    res = run_load(LoadSpec(url=f"{server}/x", users=1, steps=[(1, 2), (3, 2)], rps=40), tmp_path / "steps")
    per_step = res.samples.groupby("step").size()
    # Three users at 40 rps each vs one; the shape ticks once a second, so the edge is blurred by up to 1 s.
    assert per_step[1] > per_step[0] * 1.5, per_step.to_dict()
    t0 = time.monotonic()
    capped = run_load(LoadSpec(url=f"{server}/x", users=5, duration_s=30, max_requests=300), tmp_path / "cap")
    assert capped.summary["stopped_by"] == "max_requests" and time.monotonic() - t0 < 15
    assert 300 <= capped.summary["count"] < 400


@pytest.mark.parametrize("url,netns,allowed", [
    ("http://192.0.2.1/", None, None),               # not loopback, not in a namespace
    ("http://8.8.8.8/", "ns", ["0.0.0.0/0"]),        # public address, even if "allowed"
    ("http://10.1.2.3/", "ns", ["10.96.0.0/16"]),    # private, but outside the suite's networks
    ("http://example.com/", None, None),             # names could resolve anywhere
])
def test_targets_outside_suite_networks_are_refused(url, netns, allowed):
    with pytest.raises(ValueError):
        check_target(url, netns, allowed)


def test_allowed_targets():
    check_target("http://127.0.0.1:8080/", None, None)
    check_target("http://10.96.0.10/", "ps-client", ["10.96.0.0/16"])
