"""Service-level objectives on perf frames: ``--slo FILE`` on ``proxysuite perf run`` and the compare-modes report.

The file is YAML, a list of bounds (or ``{slos: [...]}``)::

    - metric: npl              # a family of perf.catalogue (or family.stat)
      scale: 1000              # Services; 1k works too
      percentile: 99           # from the raw samples where the family keeps them, else the pNN summary row
      bound: 500               # upper bound, in the catalogue's unit of that figure (npl: ms)
    - metric: sync_full
      stat: mean               # instead of a percentile: a summary stat
      phase: restart           # optional: only rows of this phase (target:, mode: likewise)
      scale: 1000
      bound: 5                 # s
      unit: s                  # optional: checked against the catalogue, so a bound in the wrong unit is an error

Each objective is checked for every mode (series) in the frame unless it names ``mode``. A figure the
frame does not have at that scale is a failure (``no data``): an objective that cannot be checked is not met.
Where several summary rows match (several targets or phases), the worst (largest) is judged and the row says so.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..errors import SuiteError
from . import catalogue as C
from .options import parse_scales

EXIT_SLO = 4
"""Exit status of ``perf run`` and ``report compare-modes`` when an objective is not met."""

KEYS = {"metric", "scale", "percentile", "stat", "bound", "unit", "phase", "target", "mode"}


@dataclass(frozen=True)
class Objective:
    family: str
    stat: str
    scale: int
    bound: float
    percentile: float | None = None
    phase: str | None = None
    target: str | None = None
    mode: str | None = None

    @property
    def unit(self) -> str:
        return C.METRICS[self.family].unit_of("sample" if self.percentile is not None and C.METRICS[self.family].has("sample")
                                              else self.stat)

    @property
    def name(self) -> str:
        what = f"p{self.percentile:g}" if self.percentile is not None else self.stat
        extra = "".join(f" {k}={v}" for k, v in (("phase", self.phase), ("target", self.target)) if v)
        return f"{self.family}.{what}{extra}"


def load(path: str | os.PathLike) -> list[Objective]:
    """Read and check an SLO file; every mistake is a one-line SuiteError naming the fix."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise SuiteError(f"--slo {p}: no such file", "pass the path of a YAML list of {metric, scale, percentile, bound}") from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"--slo {p}: not YAML ({str(exc).splitlines()[0]})", "fix the file's syntax") from None
    if isinstance(raw, dict) and "slos" in raw:
        raw = raw["slos"]
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"--slo {p}: expected a non-empty list of objectives", "write - {metric: npl, scale: 1000, percentile: 99, bound: 500}")
    return [_objective(p, i, e) for i, e in enumerate(raw, 1)]


def _objective(p: Path, i: int, e) -> Objective:
    where = f"--slo {p}, objective {i}"
    if not isinstance(e, dict):
        raise SuiteError(f"{where}: expected a mapping, got {e!r}", "write metric:, scale:, percentile: (or stat:), bound:")
    unknown = set(e) - KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", f"use only {', '.join(sorted(KEYS))}")
    for k in ("metric", "scale", "bound"):
        if k not in e:
            raise SuiteError(f"{where}: {k} is missing", "every objective has metric, scale, bound and a percentile or stat")
    family, _, stat = str(e["metric"]).partition(".")
    if family not in C.METRICS:
        raise SuiteError(f"{where}: metric {family!r} is not in the perf catalogue", f"use one of {', '.join(C.METRICS)}")
    m = C.METRICS[family]
    pct = e.get("percentile")
    stat = str(e.get("stat") or stat or "")
    if pct is not None and stat:
        raise SuiteError(f"{where}: give percentile or stat, not both", "drop one")
    if pct is not None:
        try:
            pct = float(pct)
        except (TypeError, ValueError):
            pct = -1
        if not 0 < pct <= 100:
            raise SuiteError(f"{where}: percentile {e['percentile']!r} is not in (0, 100]", "write e.g. percentile: 99")
        if not m.has("sample") and not m.has(f"p{pct:g}"):
            raise SuiteError(f"{where}: {family} keeps no samples and has no p{pct:g} stat", f"use stat: one of {', '.join(m.stats)}")
    elif not stat or not m.has(stat):
        raise SuiteError(f"{where}: {family} needs a percentile or a stat", f"stats of {family}: {', '.join(m.stats) or m.stat_pattern}")
    try:
        scale = parse_scales(str(e["scale"]))[0]
        bound = float(e["bound"])
    except Exception:  # noqa: BLE001 - argparse's or float's message, reworded as the fix
        raise SuiteError(f"{where}: scale {e['scale']!r} / bound {e['bound']!r} are not numbers", "write scale: 1000, bound: 500") from None
    o = Objective(family, stat or "sample", scale, bound, pct, e.get("phase"), e.get("target"), e.get("mode"))
    if "unit" in e and str(e["unit"]) != o.unit:
        raise SuiteError(f"{where}: {o.name} is recorded in {o.unit}, not {e['unit']}", f"give the bound in {o.unit}")
    return o


def _value(df: pd.DataFrame, o: Objective, mode: str) -> tuple[float | None, str]:
    sub = df[(df["mode"] == mode) & (df["metric"] == o.family) & (df["scale"] == o.scale)]
    for col, want in (("phase", o.phase), ("target", o.target)):
        if want is not None:
            sub = sub[(sub[col] == want).fillna(False)] if col in sub.columns else sub.iloc[0:0]
    if o.percentile is not None:
        s = sub[sub["kind"] == "sample"]["value"].dropna()
        if len(s):
            return float(np.percentile(s, o.percentile)), f"p{o.percentile:g} of {len(s)} samples"
        stat = f"p{o.percentile:g}"
    else:
        stat = o.stat
    rows = sub[(sub["kind"] == "summary") & (sub["stat"] == stat)]["value"].dropna()
    if rows.empty:
        return None, "no data"
    return float(rows.max()), (f"{stat}" if len(rows) == 1 else f"worst of {len(rows)} {stat} rows")


def check(df: pd.DataFrame, objectives: list[Objective]) -> pd.DataFrame:
    """One row per (objective, mode): value, bound, how it was read, and ``ok``."""
    modes = sorted(df["mode"].dropna().unique())
    rows = []
    for o in objectives:
        for mode in ([o.mode] if o.mode else modes):
            v, how = _value(df, o, mode)
            ok = v is not None and not math.isnan(v) and v <= o.bound
            rows.append(dict(mode=mode, objective=o.name, scale=o.scale, value=v, bound=o.bound, unit=o.unit, how=how,
                             verdict="ok" if ok else ("NO DATA" if v is None else "EXCEEDED"), ok=ok))
    return pd.DataFrame(rows, columns=["mode", "objective", "scale", "value", "bound", "unit", "how", "verdict", "ok"])


def table(result: pd.DataFrame) -> str:
    """The verdicts as a Markdown table (printed by the CLIs, written into the report)."""
    out = ["| mode | objective | scale | measured | bound | read as | verdict |", "|---|---|---|---|---|---|---|"]
    for r in result.itertuples(index=False):
        v = "–" if r.value is None or (isinstance(r.value, float) and math.isnan(r.value)) else f"{r.value:.4g} {r.unit}"
        out.append(f"| {r.mode} | {r.objective} | {r.scale:,} | {v} | ≤ {r.bound:g} {r.unit} | {r.how} | "
                   f"{r.verdict if r.ok else '**' + r.verdict + '**'} |")
    return "\n".join(out)


def enforce(df: pd.DataFrame, path: str | os.PathLike, say=print) -> int:
    """Check ``df`` against the SLO file, print the table; 0 when every objective holds, else :data:`EXIT_SLO`."""
    result = check(df, load(path))
    bad = int((~result["ok"]).sum())
    say(f"SLOs from {path}: {len(result) - bad} met, {bad} not met\n{table(result)}")
    return EXIT_SLO if bad else 0
