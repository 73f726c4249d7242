"""One tidy table per run: every measured figure is a row.

A run is one proxy mode on one provider, swept over scales. Its frame has the
columns in :data:`COLUMNS`; a row is either a summary figure
(``kind="summary"``, e.g. ``first_packet.p99`` at 5,000 services) or one raw
sample (``kind="sample"``, e.g. one connect time in µs), so the report can
recompute any statistic and plot distributions without going back to the
cluster::

    rec = RunRecorder(run_id, mode="nftables", provider="local", meta=collect_metadata(cluster))
    rec.record(C.SYNC_FULL, "mean", 0.31, scale=1000, source="kube-proxy metrics")   # unit from the catalogue
    rec.record_samples(C.FIRST_PACKET, connect_us_list, scale=1000, target="first")
    paths = rec.save("reports")      # reports/perf/<run>-<mode>/results.{parquet,csv} + meta.json

Metric names, stats and units are checked against ``perf.catalogue`` as rows are
added: a name the catalogue does not know is an error at the first write.

Run metadata (kernel, Kubernetes version, proxy flags such as minSyncPeriod,
iptables/nft versions and the iptables backend, CPU count) travels with the
data: in ``meta.json`` beside the files and in the Parquet schema metadata, so
a Parquet file copied on its own still says what produced it. Upstream
comparisons are hard precisely because this was missing (iptables ran with
``minSyncPeriod: 10s`` in the jobs KEP-3866 compares against).
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..modes import KUBE_PROXY_METRICS_PORT
from . import catalogue

COLUMNS = ["run_id", "started", "mode", "provider", "scale", "metric", "stat", "value", "unit", "kind", "sample",
           "target", "estimate", "source"]
"""Columns every frame has, in this order; extra keys passed to ``add`` become extra columns."""

META_KEY = b"proxysuite.meta"


@dataclass
class RunRecorder:
    """Collects rows for one run; ``frame()`` builds the DataFrame, ``save()`` writes it."""

    run_id: str
    mode: str
    provider: str
    meta: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    rows: list[dict] = field(default_factory=list)

    def add(self, metric: str, value: float, unit: str, scale: int | None = None, **extra) -> None:
        """One summary figure. ``metric`` is ``<family>.<stat>`` (``first_packet.p99``) or a bare name."""
        family, _, stat = metric.partition(".")
        family, stat = (family, stat) if stat else (metric, "value")
        catalogue.lookup(family, stat, unit)
        self.rows.append(dict(metric=family, stat=stat, value=float(value), unit=unit, scale=scale, kind="summary", **extra))

    def record(self, metric: catalogue.Metric, stat: str, value: float, scale: int | None = None, **extra) -> None:
        """One summary figure of a catalogue family, in the catalogue's unit."""
        self.add(metric.key(stat), value, metric.unit_of(stat), scale=scale, **extra)

    def record_samples(self, metric: catalogue.Metric, values, scale: int | None = None, **extra) -> None:
        """Raw samples of a catalogue family, in the catalogue's unit."""
        self.add_samples(metric.name, values, metric.unit_of("sample"), scale=scale, **extra)

    def record_sample(self, metric: catalogue.Metric, value: float, index: int, scale: int | None = None, **extra) -> None:
        """One raw sample with its own extra columns (e.g. each programming-latency change's resolution)."""
        catalogue.lookup(metric.name, "sample")
        self.rows.append(dict(metric=metric.name, stat="sample", value=float(value), unit=metric.unit_of("sample"),
                              scale=scale, kind="sample", sample=index, **extra))

    def skipped(self, phase: str, scale: int | None, reason: str) -> None:
        """A phase that did not apply: a ``phase.skipped`` row (note = reason) and ``meta["phases"]``."""
        self.record(catalogue.PHASE_SKIPPED, "skipped", 1, scale=scale, phase=phase, note=reason)
        entry = self.meta.setdefault("phases", {}).setdefault(phase, {"ran": [], "skipped": [], "reason": None})
        entry["skipped"].append(scale)
        entry["reason"] = reason

    def ran(self, phase: str, scale: int | None) -> None:
        """Note in ``meta["phases"]`` that a phase ran at ``scale``."""
        entry = self.meta.setdefault("phases", {}).setdefault(phase, {"ran": [], "skipped": [], "reason": None})
        entry["ran"].append(scale)

    def add_rows(self, rows: list[dict], scale: int | None = None, **extra) -> None:
        """Rows shaped like ``perf.metrics.summarize`` output (metric, value, unit, ...)."""
        for r in rows:
            r = dict(r)
            self.add(r.pop("metric"), r.pop("value"), r.pop("unit"), scale=r.pop("scale", scale), **{**extra, **r})

    def add_samples(self, metric: str, values, unit: str, scale: int | None = None, **extra) -> None:
        """Raw samples, one row each (connect times, programming latencies, request times)."""
        catalogue.lookup(metric, "sample", unit)
        for i, v in enumerate(values):
            self.rows.append(dict(metric=metric, stat="sample", value=float(v), unit=unit, scale=scale,
                                  kind="sample", sample=i, **extra))

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        for col in COLUMNS:
            if col not in df.columns:
                df[col] = None
        df["run_id"], df["mode"], df["provider"] = self.run_id, self.mode, self.provider
        df["started"] = pd.Timestamp(self.started, unit="s", tz="UTC")
        df["scale"] = df["scale"].astype("Int64")
        df["sample"] = df["sample"].astype("Int64")
        df["value"] = df["value"].astype("float64")
        df["estimate"] = df["estimate"].astype("boolean").fillna(False)
        # The backend is a dimension of every iptables run: a column, so frames of both backends can be pooled.
        df["iptables_backend"] = self.meta.get("iptables_backend") if self.mode == "iptables" else None
        # The run's IP families ("ipv4", "ipv6", "ipv4,ipv6"): a dual-stack run's rows carry ip_family per figure.
        df["ip_families"] = ",".join(self.meta.get("ip_families") or ["ipv4"])
        if "ip_family" not in df.columns:
            df["ip_family"] = None
        extra = [c for c in df.columns if c not in COLUMNS]
        for c in ["metric", "stat", "unit", "kind", "target", "source", *extra]:
            if df[c].dtype == object or str(df[c].dtype).startswith("str"):
                df[c] = df[c].astype("string")
        return df[COLUMNS + extra]

    def run_dir(self, reports_dir: str | os.PathLike = "reports") -> Path:
        """``reports/perf/<UTC start>-<mode>-<run id>``: where ``save`` writes (and raw extras can go)."""
        return Path(reports_dir) / "perf" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(self.started))}-{self.mode}-{self.run_id}"

    def save(self, reports_dir: str | os.PathLike = "reports") -> dict[str, Path]:
        out = self.run_dir(reports_dir)
        out.mkdir(parents=True, exist_ok=True)
        df = self.frame()
        meta = {"run_id": self.run_id, "mode": self.mode, "provider": self.provider, "started": self.started, **self.meta}
        table = pa.Table.from_pandas(df, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
        paths = {"parquet": out / "results.parquet", "csv": out / "results.csv", "meta": out / "meta.json"}
        pq.write_table(table, paths["parquet"])
        df.to_csv(paths["csv"], index=False)
        paths["meta"].write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return paths


def load(paths: list[str | os.PathLike]) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Load runs from Parquet files, CSV files or run directories; returns (frame, {run_id: meta})."""
    frames, metas = [], {}
    for p in map(Path, paths):
        if p.is_dir():
            inner = sorted(p.rglob("results.parquet"))
            if not inner:
                raise FileNotFoundError(f"no results.parquet under {p}")
            sub, m = load(inner)
            frames.append(sub)
            metas.update(m)
            continue
        if p.suffix == ".parquet":
            table = pq.read_table(p)
            df = table.to_pandas()
            raw = (table.schema.metadata or {}).get(META_KEY)
            meta = json.loads(raw) if raw else {}
        elif p.suffix == ".csv":
            df = pd.read_csv(p)
            side = p.with_name("meta.json")
            meta = json.loads(side.read_text()) if side.exists() else {}
        else:
            raise ValueError(f"{p}: expected a .parquet or .csv results file or a run directory")
        if "iptables_backend" not in df.columns:
            # Frames from before the column: the backend their metadata recorded (iptables --version).
            df["iptables_backend"] = meta.get("iptables_backend") or iptables_backend(meta.get("iptables_version"))
            df.loc[df["mode"] != "iptables", "iptables_backend"] = None
        frames.append(df)
        for rid in df["run_id"].dropna().unique():
            metas[str(rid)] = meta
    if not frames:
        raise FileNotFoundError("no results given")
    df = pd.concat(frames, ignore_index=True)
    df["started"] = pd.to_datetime(df["started"], utc=True)
    return df, metas


# --- run metadata -----------------------------------------------------------------------------------------------


def _node_cmd(cluster, node: str, argv: list[str]) -> str | None:
    try:
        return cluster.node_exec(node, argv, timeout=15).strip()
    except Exception:  # noqa: BLE001 - metadata is best effort; a missing tool is recorded as None
        return None


def iptables_backend(version_line: str | None) -> str | None:
    """``iptables v1.8.9 (nf_tables)`` → ``nf_tables``; ``(legacy)`` → ``legacy``."""
    if not version_line:
        return None
    m = re.search(r"\((nf_tables|legacy)\)", version_line)
    return m.group(1) if m else None


BACKEND_PROBES = {"legacy": ["iptables-legacy-save", "-t", "nat"], "nf_tables": ["iptables-nft-save", "-t", "nat"]}
"""Each backend's own dump in the node's namespace: where kube-proxy's chains are is the backend it used."""


def backend_from_rules(dumps: dict[str, str | None]) -> str | None:
    """``{"legacy": <iptables-legacy-save>, "nf_tables": <iptables-nft-save>}`` → the backend holding ``KUBE-SERVICES``.

    ``both`` when each has it (a proxy that switched backends and left its old rules), None when neither
    dump could be read or neither has the chain (no iptables proxy ran here).
    """
    have = [b for b, text in dumps.items() if text and re.search(r"^:KUBE-SERVICES ", text, re.M)]
    return "both" if len(have) > 1 else (have[0] if have else None)


def backend_from_tool(path: str | None) -> str | None:
    """``/usr/sbin/xtables-legacy-multi`` → ``legacy``; ``…xtables-nft-multi`` → ``nf_tables``."""
    if not path:
        return None
    name = os.path.basename(path)
    return "legacy" if "legacy" in name else "nf_tables" if "nft" in name else None


def detect_iptables_backend(cluster, node: str) -> dict:
    """Which iptables backend the proxy on ``node`` uses, from what it runs and what it wrote.

    ``iptables_backend_rules``: the backend whose nat table holds ``KUBE-SERVICES`` (node exec);
    ``iptables_backend_exec``: what ``iptables`` resolves to on the proxy's own PATH (local provider);
    ``iptables_backend``: the first of those known, else the node's ``iptables --version``, which on the local
    provider is the host's tool and can differ from the proxy's (``--iptables-backend``);
    ``iptables_backend_source`` says which one it came from.
    """
    out: dict = {"iptables_backend_rules": backend_from_rules({b: _node_cmd(cluster, node, argv) for b, argv in BACKEND_PROBES.items()})}
    tool = getattr(cluster, "proxy_iptables_tool", None)
    out["iptables_proxy_tool"] = tool(node) if tool else None
    out["iptables_backend_exec"] = backend_from_tool(out["iptables_proxy_tool"])
    version = iptables_backend(_node_cmd(cluster, node, ["iptables", "--version"]))
    for source in ("rules", "exec"):
        v = out[f"iptables_backend_{source}"]
        if v:
            out.update(iptables_backend=v, iptables_backend_source=source)
            break
    else:
        out.update(iptables_backend=version, iptables_backend_source="iptables --version" if version else None)
    return out


def proxy_config(cluster, node: str) -> dict:
    """kube-proxy's effective configuration from ``/configz`` (flags and config file merged), or {}."""
    try:
        status, body = cluster.proxy_http(node, KUBE_PROXY_METRICS_PORT, "/configz")
        if status == 200:
            cfg = json.loads(body)
            return cfg.get("kubeproxy.config.k8s.io", cfg)
    except Exception:  # noqa: BLE001
        pass
    return {}


def collect_metadata(cluster=None, node: str | None = None, k8s_api=None) -> dict:
    """What produced the numbers. Every field is best effort and None when it could not be read."""
    meta: dict = {
        "generator_host": platform.node(),
        "generator_kernel": platform.release(),
        "generator_cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    if cluster is None:
        return meta
    nodes = cluster.nodes()
    node = node or (nodes[0].name if nodes else None)
    meta.update(cluster_provider=getattr(cluster, "provider", None), cluster_mode=getattr(cluster, "mode", None),
                nodes=len(nodes), measured_node=node)
    if k8s_api is not None:
        try:
            from kubernetes import client

            meta["kubernetes_version"] = client.VersionApi(k8s_api).get_code().git_version
        except Exception:  # noqa: BLE001
            meta["kubernetes_version"] = None
    if node:
        cfg = proxy_config(cluster, node)
        meta["proxy_config"] = cfg
        for key in ("mode",):
            meta[f"proxy_{key}"] = cfg.get(key)
        for key in ("minSyncPeriod", "syncPeriod"):
            meta[f"proxy_{key}"] = (cfg.get("iptables") or {}).get(key) if cfg.get("mode") != "nftables" else (cfg.get("nftables") or {}).get(key)
            meta[f"proxy_{key}"] = meta[f"proxy_{key}"] or cfg.get(key) or (cfg.get("iptables") or {}).get(key)
        try:
            status, body = cluster.proxy_http(node, KUBE_PROXY_METRICS_PORT, "/proxyMode")
            meta["proxy_mode_reported"] = body.strip() if status == 200 else None
        except Exception:  # noqa: BLE001
            meta["proxy_mode_reported"] = None
        meta["node_kernel"] = _node_cmd(cluster, node, ["uname", "-r"])
        meta["node_cpus"] = _node_cmd(cluster, node, ["nproc"])
        meta["iptables_version"] = _node_cmd(cluster, node, ["iptables", "--version"])
        meta["iptables_backend"] = iptables_backend(meta["iptables_version"])
        if (meta.get("proxy_mode_reported") or getattr(cluster, "mode", None)) == "iptables":
            meta.update(detect_iptables_backend(cluster, node))
        meta["nft_version"] = _node_cmd(cluster, node, ["nft", "--version"])
    return meta
