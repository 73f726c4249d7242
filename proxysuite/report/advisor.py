"""The mode advisor: fit each mode's measured curves against Services × endpoints and say where each crosses
the usual decision thresholds, with the fit's uncertainty.

Every curve is a power law ``y = a · x^b`` with ``x`` = Services × endpoints per Service, fitted by least
squares on ``log y = log a + b · log x`` over every run of the series (several runs per mode tighten it).
The parameters' covariance is the textbook OLS one (residual variance × (XᵀX)⁻¹); a prediction's and a
crossing's interval are the 16th–84th percentiles (±1σ) of 4,000 draws of (log a, b) from the multivariate
Student-t with n − 2 degrees of freedom around the fit. With only two
distinct scales there are no residual degrees of freedom: the line goes through both points and the
uncertainty is unknown, which the table says instead of inventing one::

    fits = advisor.fit_all(df)                       # {(series, figure): Fit}
    advisor.crossings(fits)                          # where each threshold is crossed, per series
    advisor.table_at(fits, (100, 1000, 5000, 10000)) # predicted figures at those Service counts

Power law, not linear: sync duration and memory grow super- or sub-linearly with the ruleset (iptables
full syncs here go ~x^1.3 over 100 → 10k Services), and log-log least squares weighs a 10 % error at 100
Services like one at 10,000 instead of letting the largest scale decide alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..perf import catalogue as C
from . import tables

GIB = 2**30


@dataclass(frozen=True)
class Figure:
    """One curve the advisor fits: what is read from the frame, and its decision threshold."""

    key: str
    label: str
    unit: str
    threshold: float
    threshold_text: str
    why: str
    model: str = "power"
    """``power`` (y = a·x^b, fitted in log-log space) or ``linear`` (y = a + b·x: a fixed base plus a cost per
    endpoint, as a process's RSS is)."""


FIGURES = (
    Figure("sync", "full sync (fresh proxy)", "s", 10.0, "sync > 10 s",
           "sync_full.mean of the restart phase: the worst sync, the one every proxy restart pays"),
    Figure("npl", "programming latency p99 (endpoint flips)", "ms", 30_000.0, "programming latency > 30 s",
           "p99 of the datapath flip samples of the npl phase; 30 s is the usual alert threshold"),
    Figure("cpu", "proxy CPU during endpoint churn", "cores", 0.5, "kube-proxy CPU > 50 %",
           "(process + iptables-restore/nft children CPU-s) / seconds of the npl phase, one change every ~1.3 s"),
    Figure("memory", "proxy RSS", "bytes", 2 * GIB, "memory > 2 GiB",
           "proxy.rss after the restart phase's full sync, fitted linearly (a base of ~60 MiB plus a cost per endpoint)",
           model="linear"),
)
SERVICES_X_ENDPOINTS = 50_000
"""The fourth threshold is on the input, not a fit: Services × endpoints > 50,000."""
ADVISOR_SCALES = (100, 1000, 5000, 10000)
HORIZON = 100
"""Crossings beyond this many times the largest measured x are not stated: a fit over 100 → 1k Services says
nothing about a million."""


@dataclass(frozen=True)
class Fit:
    """``y = exp(la) · x^b`` (power) or ``y = la + b·x`` (linear), with the covariance of (la, b); ``n`` points
    over ``distinct`` values of x."""

    series: str
    figure: Figure
    la: float
    b: float
    cov: np.ndarray | None
    n: int
    distinct: int
    x_max: float
    r2: float | None

    @property
    def linear(self) -> bool:
        return self.figure.model == "linear"

    def _y(self, la, b, x):
        with np.errstate(over="ignore"):  # a wild draw far out overflows to inf, which the percentiles handle
            return la + b * x if self.linear else np.exp(la + b * np.log(x))

    def _x(self, la, b, y):
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            return (y - la) / b if self.linear else np.exp((np.log(y) - la) / b)

    def predict(self, x: float) -> float:
        return float(self._y(self.la, self.b, x))

    def _draws(self, k: int = 4000) -> np.ndarray | None:
        if self.cov is None or not np.all(np.isfinite(self.cov)):
            return None
        rng = np.random.default_rng(14)  # fixed: the same frames give the same report
        z = rng.multivariate_normal([0.0, 0.0], self.cov, size=k, check_valid="ignore")
        # Student-t, not normal: with n - 2 residual degrees of freedom (often 1 here) the normal interval is
        # far too narrow; dividing by sqrt(chi²_dof / dof) draws from the multivariate t.
        dof = self.n - 2
        w = np.sqrt(rng.chisquare(dof, size=k) / dof)
        return np.array([self.la, self.b]) + z / w[:, None]

    def predict_interval(self, x: float) -> tuple[float, float] | None:
        d = self._draws()
        if d is None:
            return None
        y = self._y(d[:, 0], d[:, 1], x)
        return float(np.percentile(y, 16)), float(np.percentile(y, 84))

    def crossing(self, threshold: float) -> float | None:
        """x where the curve reaches ``threshold``; None when it never does (flat or falling)."""
        if self.b <= 1e-12:
            return None if self.predict(1) < threshold else 1.0
        return float(self._x(self.la, self.b, threshold))

    def crossing_interval(self, threshold: float) -> tuple[float, float] | None:
        d = self._draws()
        if d is None:
            return None
        d = d[d[:, 1] > 1e-12]
        if len(d) < 100:
            return None
        x = self._x(d[:, 0], d[:, 1], threshold)
        return float(np.percentile(x, 16)), float(np.percentile(x, 84))


def fit_power(series: str, figure: Figure, x, y) -> Fit | None:
    """Least squares (in log-log space for a power law); None with fewer than two distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    distinct = len(np.unique(x))
    if distinct < 2:
        return None
    lin = figure.model == "linear"
    X = np.column_stack([np.ones(len(x)), x if lin else np.log(x)])
    ly = y if lin else np.log(y)
    coef, *_ = np.linalg.lstsq(X, ly, rcond=None)
    resid = ly - X @ coef
    dof = len(x) - 2
    cov = None
    r2 = None
    if dof > 0:
        s2 = float(resid @ resid) / dof
        cov = s2 * np.linalg.inv(X.T @ X)
        tot = float(((ly - ly.mean()) ** 2).sum())
        r2 = 1 - float(resid @ resid) / tot if tot > 0 else None
    return Fit(series, figure, float(coef[0]), float(coef[1]), cov, len(x), distinct, float(x.max()), r2)


def _endpoints(df: pd.DataFrame) -> dict[str, int]:
    metas = df.attrs.get("metas", {})
    return {rid: int(m.get("endpoints_per_service") or 2) for rid, m in metas.items()}


def points(df: pd.DataFrame) -> pd.DataFrame:
    """(series, run_id, scale, x, figure, value): one point per run, scale and figure, from the frame.

    Series are modes, with iptables split by backend (``iptables-legacy``): the two are never pooled."""
    eps = _endpoints(df)
    df = tables.split_ip_families(tables.split_iptables_backend(df))
    rows = []

    def add(sub: pd.DataFrame, key: str, scale_fn=None):
        for _, r in sub.iterrows():
            if pd.isna(r["scale"]) or int(r["scale"]) <= 0 or pd.isna(r["value"]):
                continue
            rows.append(dict(series=r["mode"], run_id=r["run_id"], scale=int(r["scale"]),
                             x=int(r["scale"]) * eps.get(str(r["run_id"]), 2), figure=key, value=float(r["value"])))

    summ = df[df["kind"] == "summary"]
    phase = summ["phase"] if "phase" in summ.columns else pd.Series(pd.NA, index=summ.index)
    sel = lambda m, s, ph: summ[(summ["metric"] == m.name) & (summ["stat"] == s) & (phase == ph).fillna(False)]  # noqa: E731
    add(sel(C.SYNC_FULL, "mean", C.RESTART), "sync")
    mem = sel(C.PROXY, "rss", C.RESTART)
    add(mem if len(mem) else sel(C.PROXY, "rss", C.NPL), "memory")
    # CPU: the process plus its children, as average cores over the npl window
    cores = sel(C.PROXY, "cpu_cores", C.NPL).set_index(["run_id", "scale"])["value"]
    kids = sel(C.PROXY, "children_cpu_cores", C.NPL).set_index(["run_id", "scale"])["value"]
    for (rid, sc), v in cores.items():
        k = kids.get((rid, sc), 0.0)
        mode = summ[summ["run_id"] == rid]["mode"].iloc[0]
        rows.append(dict(series=mode, run_id=rid, scale=int(sc), x=int(sc) * eps.get(str(rid), 2), figure="cpu",
                         value=float(v) + float(0.0 if pd.isna(k) else k)))
    s = df[(df["kind"] == "sample") & (df["metric"] == C.NPL_DP.name) & df["target"].isin(tables.FLIPS).fillna(False)]
    for (mode, rid, sc), g in s.groupby(["mode", "run_id", "scale"]):
        rows.append(dict(series=mode, run_id=rid, scale=int(sc), x=int(sc) * eps.get(str(rid), 2), figure="npl",
                         value=float(np.percentile(g["value"], 99))))
    return pd.DataFrame(rows, columns=["series", "run_id", "scale", "x", "figure", "value"])


def fit_all(df: pd.DataFrame) -> dict[tuple[str, str], Fit]:
    pts = points(df)
    out = {}
    for fig in FIGURES:
        for series, g in pts[pts["figure"] == fig.key].groupby("series"):
            f = fit_power(series, fig, g["x"], g["value"])
            if f is not None:
                out[(series, fig.key)] = f
    return out


def _fmt(v: float, unit: str) -> str:
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"
    if unit == "ms":
        return f"{v:.0f} ms" if v < 1000 else f"{v / 1000:.1f} s"
    if unit == "bytes":
        return f"{v / 2**20:.0f} MiB" if v < GIB else f"{v / GIB:.2f} GiB"
    if unit == "cores":
        return f"{v * 100:.0f} %"
    return f"{v:.3g} {unit}"


def _services(x: float, endpoints: int) -> str:
    return f"{x / endpoints:,.0f}"


def crossings(fits: dict[tuple[str, str], Fit], endpoints: int = 2) -> pd.DataFrame:
    """Per series and threshold: the Service count where it is crossed, its ±1σ interval, and how far that
    is beyond what was measured (an extrapolation beyond 10× the largest measured point is flagged)."""
    rows = []
    for series in sorted({s for s, _ in fits}):
        for fig in FIGURES:
            f = fits.get((series, fig.key))
            if f is None:
                rows.append(dict(series=series, threshold=fig.threshold_text, services="–", interval="–",
                                 fit="no data (fewer than two scales)", note=""))
                continue
            x = f.crossing(fig.threshold)
            ci = f.crossing_interval(fig.threshold)
            fit_txt = ((f"y = {_fmt(f.la, fig.unit)} + {_fmt(f.b * 1000, fig.unit)} per 1,000 endpoints" if f.linear
                        else f"y ∝ x^{f.b:.2f}")
                       + (f" (r² {f.r2:.2f})" if f.cov is not None and f.r2 is not None else "")
                       + f", {f.n} points at {f.distinct} scales")
            if x is None or x > HORIZON * f.x_max:
                beyond = _services(HORIZON * f.x_max, endpoints)
                rows.append(dict(series=series, threshold=fig.threshold_text,
                                 services="not crossed (flat or falling)" if x is None else f"> {beyond}",
                                 interval="–", fit=fit_txt,
                                 note="" if x is None else f"not within {HORIZON}× the largest measured scale"))
                continue
            note = "extrapolated > 10× beyond the largest measured scale" if x > 10 * f.x_max else (
                "within measured range" if x <= f.x_max else "extrapolated")
            rows.append(dict(series=series, threshold=fig.threshold_text, services=_services(x, endpoints),
                             interval=(f"{_services(ci[0], endpoints)} – "
                                       + (_services(ci[1], endpoints) if ci[1] <= HORIZON * f.x_max else
                                          f"> {_services(HORIZON * f.x_max, endpoints)}") if ci else
                                       "unknown (two scales: no residual degrees of freedom)"),
                             fit=fit_txt, note=note))
        rows.append(dict(series=series, threshold=f"Services × endpoints > {SERVICES_X_ENDPOINTS:,}",
                         services=_services(SERVICES_X_ENDPOINTS, endpoints), interval="exact",
                         fit=f"input, not a fit ({endpoints} endpoints per Service)", note=""))
    return pd.DataFrame(rows, columns=["series", "threshold", "services", "interval", "fit", "note"])


def table_at(fits: dict[tuple[str, str], Fit], scales=ADVISOR_SCALES, endpoints: int = 2) -> pd.DataFrame:
    """Predicted figures per series at each Service count, ±1σ, with the thresholds they exceed."""
    rows = []
    for series in sorted({s for s, _ in fits}):
        for sc in scales:
            x = sc * endpoints
            row = {"series": series, "services": f"{sc:,}"}
            over = []
            for fig in FIGURES:
                f = fits.get((series, fig.key))
                if f is None:
                    row[fig.key] = "–"
                    continue
                y = f.predict(x)
                ci = f.predict_interval(x)
                row[fig.key] = _fmt(y, fig.unit) + (f" ({_fmt(ci[0], fig.unit)} – {_fmt(ci[1], fig.unit)})" if ci else "")
                if x > 10 * f.x_max:
                    row[fig.key] += " ⚠ extrapolated"
                if y > fig.threshold:
                    over.append(fig.threshold_text)
            if x > SERVICES_X_ENDPOINTS:
                over.append(f"Services × endpoints > {SERVICES_X_ENDPOINTS:,}")
            row["exceeds"] = ", ".join(over) or "none"
            rows.append(row)
    return pd.DataFrame(rows, columns=["series", "services", *[f.key for f in FIGURES], "exceeds"])


def markdown(df: pd.DataFrame) -> str:
    """The advisor section of the report (Markdown)."""
    fits = fit_all(df)
    eps = sorted(set(_endpoints(df).values())) or [2]
    endpoints = eps[-1]
    if not fits:
        return "No series has two or more scales with these figures, so nothing is fitted."
    cross = crossings(fits, endpoints)
    at = table_at(fits, ADVISOR_SCALES, endpoints)
    head = (f"Each figure fitted as a power law of Services × endpoints ({endpoints} per Service) over every run of "
            "the series; intervals are ±1σ of the fit (16th–84th percentile). " +
            "; ".join(f"**{f.label}**: {f.why}" for f in FIGURES) + ".")
    return "\n\n".join([head, "### Where each threshold is crossed (Services)", _md(cross),
                        "### Predicted at 100 / 1k / 5k / 10k Services", _md(at.rename(columns={f.key: f.label for f in FIGURES}))])


def _md(t: pd.DataFrame) -> str:
    out = ["| " + " | ".join(map(str, t.columns)) + " |", "|" + "---|" * len(t.columns)]
    out += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in t.itertuples(index=False)]
    return "\n".join(out)
