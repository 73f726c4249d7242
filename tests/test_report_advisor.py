"""The mode advisor: power-law / linear least squares with their uncertainty, on known curves and on real frames
(tests/data/perf-runs, see its README), and its section in the compare-modes report."""

import math
from pathlib import Path

import numpy as np
import pytest

from proxysuite.perf import frames
from proxysuite.report import advisor, compare

RUNS = Path(__file__).parent / "data" / "perf-runs"
SYNC = next(f for f in advisor.FIGURES if f.key == "sync")
MEMORY = next(f for f in advisor.FIGURES if f.key == "memory")


def test_power_law_recovers_a_known_curve_and_its_crossing():
    x = np.array([200, 200, 2000, 2000, 10000, 20000], float)
    y = 2e-4 * x**1.3
    f = advisor.fit_power("t", SYNC, x, y)
    assert f.b == pytest.approx(1.3) and f.predict(20000) == pytest.approx(2e-4 * 20000**1.3)
    assert f.crossing(10.0) == pytest.approx((10 / 2e-4) ** (1 / 1.3))
    assert f.r2 == pytest.approx(1.0)


def test_noise_gives_an_interval_that_holds_the_estimate_and_two_scales_give_none():
    rng = np.random.default_rng(1)
    x = np.repeat([200, 2000, 10000, 20000], 3).astype(float)
    y = 2e-4 * x**1.3 * np.exp(rng.normal(0, 0.2, len(x)))
    f = advisor.fit_power("t", SYNC, x, y)
    lo, hi = f.crossing_interval(10.0)
    assert lo < f.crossing(10.0) < hi and hi / lo < 3
    plo, phi = f.predict_interval(5000)
    assert plo < f.predict(5000) < phi
    two = advisor.fit_power("t", SYNC, [200, 2000], [0.1, 1.0])
    assert two.cov is None and two.crossing_interval(10.0) is None and two.crossing(10.0) == pytest.approx(20000)


def test_linear_model_for_memory():
    x = np.array([200, 2000, 10000, 20000], float)
    f = advisor.fit_power("t", MEMORY, x, 60 * 2**20 + 1000.0 * x)
    assert f.la == pytest.approx(60 * 2**20) and f.b == pytest.approx(1000.0)
    assert f.crossing(2 * 2**30) == pytest.approx((2 * 2**30 - 60 * 2**20) / 1000.0)


@pytest.fixture(scope="module")
def real():
    df, metas = frames.load([RUNS])
    df.attrs["metas"] = metas
    return df


def test_points_on_real_frames_match_the_frame(real):
    pts = advisor.points(real)
    nft = pts[(pts["series"] == "nftables") & (pts["figure"] == "npl")]
    assert len(nft) >= 4 and set(nft["x"]) >= {200, 600}  # Services × 2 endpoints
    one = nft.iloc[0]
    s = real[(real["run_id"] == one["run_id"]) & (real["scale"] == one["scale"]) & (real["metric"] == "npl")
             & (real["kind"] == "sample") & real["target"].isin(["endpoint_ready", "endpoint_not_ready"])]["value"]
    assert one["value"] == pytest.approx(np.percentile(s, 99))


def test_real_fits_state_crossings_and_the_table_at_the_four_scales(real):
    fits = advisor.fit_all(real)
    assert {("iptables", "sync"), ("nftables", "sync"), ("nftables", "memory")} <= set(fits)
    f = fits[("nftables", "sync")]
    x = f.crossing(10.0)
    assert f.predict(x) == pytest.approx(10.0)
    cross = advisor.crossings(fits)
    rows = cross[cross["series"] == "nftables"].set_index("threshold")
    assert rows.loc["Services × endpoints > 50,000", "services"] == "25,000"
    assert set(advisor.FIGURES[i].threshold_text for i in range(4)) <= set(rows.index)
    at = advisor.table_at(fits)
    assert list(at[at["series"] == "nftables"]["services"]) == ["100", "1,000", "5,000", "10,000"]
    # measured at 100 Services: the fitted value is close to what was measured there
    pts = advisor.points(real)
    meas = pts[(pts["series"] == "nftables") & (pts["figure"] == "memory") & (pts["scale"] == 100)]["value"].mean()
    assert fits[("nftables", "memory")].predict(200) == pytest.approx(meas, rel=0.05)


def test_report_has_the_advisor_section(real, tmp_path):
    assert compare.main(["compare-modes", str(RUNS), "-o", str(tmp_path)]) == 0
    md = (tmp_path / "summary.md").read_text()
    sec = md.split("## Mode advisor")[1].split("\n## ")[0]
    assert "Where each threshold is crossed" in sec and "Predicted at 100 / 1k / 5k / 10k Services" in sec
    assert "sync > 10 s" in sec and "kube-proxy CPU > 50 %" in sec and "memory > 2 GiB" in sec
    html = (tmp_path / "compare-modes.html").read_text()
    assert "<h2>Mode advisor</h2>" in html and "<h3>Where each threshold is crossed (Services)</h3>" in html
    assert not math.isnan(advisor.fit_all(real)[("nftables", "sync")].b)


def test_backends_are_fitted_apart():
    df, metas = frames.load([Path(__file__).parent / "data" / "perf-tuning"])
    df.attrs["metas"] = metas
    fits = advisor.fit_all(df)
    assert {s for s, _ in fits} == {"iptables", "iptables-legacy"}
    # nf_tables: two scales, one run: the curve goes through both points, and no interval is invented
    f = fits[("iptables", "sync")]
    assert f.distinct == 2 and f.cov is None and f.predict_interval(20000) is None
    pts = advisor.points(df)
    nft = pts[(pts["series"] == "iptables") & (pts["figure"] == "sync")].set_index("x")["value"]
    assert f.predict(2000) == pytest.approx(nft[2000])
    # legacy: 100, 1k and 10k Services: one residual degree of freedom, a Student-t interval around the fit
    leg = fits[("iptables-legacy", "sync")]
    assert leg.distinct == 3 and leg.cov is not None
    lo, hi = leg.predict_interval(10000)
    assert lo < leg.predict(10000) < hi
    measured = pts[(pts["series"] == "iptables-legacy") & (pts["figure"] == "sync")].set_index("x")["value"]
    assert leg.predict(20000) == pytest.approx(measured[20000], rel=0.5)
