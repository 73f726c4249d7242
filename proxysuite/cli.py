"""``proxysuite``: bring clusters up and down, list them, clean up after crashes, build reports.

    proxysuite cluster up     [--provider local] [--mode iptables] [--nodes 2] ...
    proxysuite cluster down   [--provider local] [--mode iptables | --cluster-name NAME]
    proxysuite cluster status [...] [-o text|json]
    proxysuite cluster env    [...]        # prints `export KUBECONFIG=...`
    proxysuite cluster list   [-o text|json]   # clusters of every provider on this machine, with owner and health
    proxysuite cluster migrate --to-mode nftables [--cluster-name NAME] [-o text|json]   # switch a running cluster's proxy mode
    proxysuite janitor        [--all]      # removes what crashed runs left behind
    proxysuite images         [--provider kind] [--mode M] [--proxy-manifest PATH]   # every image the suite pulls
    proxysuite version        [-o text|json]
    proxysuite kind setup-engine | build-node-image | stop-engine   # kind where it is missing (no Docker, no registry)
    proxysuite perf run       [cluster options] [--scales 100,1k,5k,10k] ...   # the perf sweep outside pytest
    proxysuite report compare-modes RESULTS... [-o DIR]
    proxysuite alerts render  [--stale-seconds 300 ...] [-o FILE]   # Prometheus alerting rules (docs/alerts.md)

Exit codes: 0 ok, 1 ``cluster status``/``env`` of a cluster that does not exist, 2 bad input or unusable
environment (one line naming the fix), 3 unsupported here, 4 ``cluster migrate`` left the old mode's rules on a node.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

from .config import DEFAULT_K8S_VERSION, OPTIONS, PROVIDERS, SuiteConfig
from .errors import ProbeError, SuiteError, Unsupported
from .runscope import progress


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    for opt in OPTIONS:
        if opt.name == "reports-dir":
            continue
        if opt.flag:
            p.add_argument(f"--{opt.name}", action="store_true", default=opt.default, help=opt.help_text())
        else:
            p.add_argument(f"--{opt.name}", type=opt.type, default=opt.default, choices=opt.choices, help=opt.help_text())


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=("text", "json"), default="text",
                   help="text for people (default), json for scripts (one document on stdout)")


def _config(args: argparse.Namespace) -> SuiteConfig:
    values = {opt.name: getattr(args, opt.name.replace("-", "_"), None) for opt in OPTIONS}
    return SuiteConfig.from_mapping({k: v for k, v in values.items() if v is not None})


def _text(doc: dict, indent: str = "") -> str:
    """``key: value`` lines; nested mappings indented, lists of scalars joined."""
    lines = []
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines.append(_text(value, indent + "  "))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{indent}{key}:")
            lines += [f"{indent}  - " + ", ".join(f"{k}={v}" for k, v in item.items()) for item in value]
        elif isinstance(value, list):
            lines.append(f"{indent}{key}: {', '.join(map(str, value)) or '(none)'}")
        else:
            lines.append(f"{indent}{key}: {'(none)' if value is None else value}")
    return "\n".join(lines)


def _emit(doc: dict, output: str) -> None:
    print(json.dumps(doc, indent=2) if output == "json" else _text(doc))


def cmd_cluster(args: argparse.Namespace) -> int:
    from .cluster import get_provider

    if args.action == "list":
        return cmd_cluster_list(args)
    if args.action == "migrate":
        return cmd_cluster_migrate(args)
    cfg = _config(args)
    provider = get_provider(cfg.provider)
    if args.action == "up":
        cl = provider.up(cfg, progress=progress)
        print(f"export KUBECONFIG={cl.kubeconfig}")
        return 0
    if args.action == "down":
        provider.down(cfg, progress=progress)
        return 0
    st = provider.status(cfg)
    if args.action == "status":
        _emit(st, args.output)
        return 0 if st.get("exists") else 1
    if not st.get("exists"):
        raise SuiteError(f"no {cfg.provider} cluster named {cfg.name}", f"run `proxysuite cluster up --provider {cfg.provider} --mode {cfg.mode}` first")
    print(f"export KUBECONFIG={st['kubeconfig']}")
    return 0


def cmd_cluster_migrate(args: argparse.Namespace) -> int:
    """Switch a running cluster's proxy to ``--to-mode`` node by node, then audit every node for the old mode's rules."""
    from .cluster import get_provider
    from .migration import rules

    if not args.to_mode:
        raise SuiteError("cluster migrate needs the mode to switch to", "pass --to-mode iptables|nftables")
    cfg = _config(args)
    provider = get_provider(cfg.provider)
    st = provider.status(cfg)
    if not st.get("exists"):
        raise SuiteError(f"no {cfg.provider} cluster named {cfg.name}", "name a running cluster with --cluster-name (see `proxysuite cluster list`)")
    # Reuse it as it runs now: its current mode and node count, whatever --mode and --nodes say.
    cfg = cfg.with_(cluster_name=cfg.name, mode=st.get("mode") or cfg.mode, nodes=len(st.get("nodes") or []) or cfg.nodes)
    if cfg.mode == args.to_mode:
        raise SuiteError(f"cluster {cfg.name} already runs {cfg.mode}", "pass another --to-mode")
    cl = provider.up(cfg, progress=progress)
    try:
        switches = cl.migrate_proxy(args.to_mode, progress=progress)
        doc: dict = {"cluster": cl.name, "provider": cl.provider, "from_mode": cfg.mode, "to_mode": cl.mode,
                     "nodes": [{"node": s.node, "restart_to_first_sync_ms": round((s.synced - s.stopped) * 1000, 1)} for s in switches]}
        ok, why = cl.features().require("node_exec")
        if ok:
            audits = [rules.audit(cl, n.name) for n in cl.nodes()]
            doc["stale_rules"] = {a.node: rules.stale_after(a, cl.mode) for a in audits}
            doc["known_leftovers"] = {a.node: a.known_leftovers() for a in audits if a.known_leftovers()}
        else:
            doc["stale_rules"] = f"not audited: {why}"
    finally:
        cl.close()
    _emit(doc, args.output)
    stale = doc["stale_rules"]
    return 4 if isinstance(stale, dict) and any(stale.values()) else 0


def cluster_list() -> dict:
    """``{"clusters": [...], "not_listed": {provider: why}}`` over every registered provider."""
    from dataclasses import asdict

    from .cluster import get_provider

    clusters: list[dict] = []
    not_listed: dict[str, str] = {}
    for name in PROVIDERS:
        provider = get_provider(name)
        try:
            found = provider.clusters()
        except (SuiteError, ProbeError) as exc:
            not_listed[name] = exc.what if isinstance(exc, Unsupported) else str(exc)
            continue
        clusters += [asdict(c) for c in found]
    return {"clusters": clusters, "not_listed": not_listed}


def cmd_cluster_list(args: argparse.Namespace) -> int:
    doc = cluster_list()
    if args.output == "json":
        print(json.dumps(doc, indent=2))
        return 0
    rows = [("PROVIDER", "NAME", "MODE", "ALIVE", "OWNER", "NOTE")]
    for c in doc["clusters"]:
        owner = "-" if c["owner_pid"] is None else f"{c['owner_pid']} ({'alive' if c['owner_alive'] else 'gone'})"
        alive = {True: "yes", False: "no", None: "?"}[c["alive"]]
        rows.append((c["provider"], c["name"], c["mode"] or "?", alive, owner, c["note"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
    for name, why in doc["not_listed"].items():
        print(f"# {name}: not listed: {why}")
    return 0


def cmd_janitor(args: argparse.Namespace) -> int:
    from . import runlocks
    from .cluster import get_provider

    for name in PROVIDERS:
        result = get_provider(name).janitor(progress=progress, everything=args.all)
        if "skipped" in result:
            progress(f"janitor: {name}: {result['skipped']}")
    if swept := runlocks.sweep():
        progress(f"janitor: removed {swept} lock file(s) of finished runs from {runlocks.LOCK_DIR}")
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from . import images

    print(images.format_images(args.mode, args.provider, args.k8s_version, args.proxy_manifest))
    return 0


def version_info() -> dict:
    from importlib import metadata

    from . import images

    try:
        suite = metadata.version("proxysuite")
    except metadata.PackageNotFoundError:
        suite = "not installed (running from a source tree)"
    doc = {"proxysuite": suite, "kubernetes": DEFAULT_K8S_VERSION, "kind": images.KIND_VERSION,
           "kind_node_image": images.kind_node_image(DEFAULT_K8S_VERSION),
           "python": f"{platform.python_version()} ({sys.executable})", "platform": platform.platform()}
    try:
        from .cluster.local import components

        pins = components.read_pins()
        doc["local_components"] = f"Kubernetes {pins.kubernetes}, Go {pins.go_minor} (pins {pins.digest})"
    except SuiteError as exc:
        doc["local_components"] = f"unknown: {exc}"
    return doc


def cmd_version(args: argparse.Namespace) -> int:
    _emit(version_info(), args.output)
    return 0


def cmd_report(args: argparse.Namespace, rest: list[str]) -> int:
    from .report import compare

    if rest[:1] == ["compare-modes"]:
        rest = rest[1:]
    return compare.main(rest)


def cmd_perf(args: argparse.Namespace, rest: list[str]) -> int:
    from .perf import run

    if rest[:1] == ["run"]:
        rest = rest[1:]
    return run.main(rest)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="proxysuite", description="Kubernetes Service proxy conformance and performance suite",
                                 epilog="exit codes: 0 ok, 1 no such cluster (status/env), 2 bad input (one line naming the fix), "
                                        "3 unsupported here, 4 cluster migrate left the old mode's rules on a node")
    sub = ap.add_subparsers(dest="command", required=True)
    cl = sub.add_parser("cluster", help="bring a cluster up or down, show it, print its KUBECONFIG, list every cluster")
    cl.add_argument("action", choices=("up", "down", "status", "env", "list", "migrate"),
                    help="up: create or reuse; down: remove; status: health and facts; env: print export KUBECONFIG=...; "
                         "list: clusters of every provider on this machine (the cluster options are ignored); "
                         "migrate: switch the running cluster's proxy to --to-mode node by node (docs/migration.md)")
    cl.add_argument("--to-mode", default=None,
                    help="migrate: the proxy mode to switch to (local: iptables or nftables); the cluster is found by --cluster-name, "
                         "or by --mode as the default name; exit 4 when the old mode's rules are left on a node")
    _add_cluster_options(cl)
    _add_output(cl)
    jan = sub.add_parser("janitor", help="remove namespaces, processes and state that crashed runs left")
    jan.add_argument("--all", action="store_true", help="also remove clusters kept on purpose (cluster up, --keep-cluster)")
    img = sub.add_parser("images", help="list every container image the suite pulls, for preloading (air-gapped machines)")
    img.add_argument("--mode", default=None, help="only the images this mode needs (default: every mode)")
    img.add_argument("--provider", default="kind", choices=PROVIDERS, help="the provider that would pull them (default: kind)")
    img.add_argument("--k8s-version", default=DEFAULT_K8S_VERSION, help=f"picks the kind node image (default: {DEFAULT_K8S_VERSION})")
    img.add_argument("--proxy-manifest", default=None,
                     help="--mode custom on kind: also list the images this manifest (your proxy's DaemonSet YAML) names")
    ver = sub.add_parser("version", help="proxysuite's version, the pinned Kubernetes and kind versions, and the Python running it")
    _add_output(ver)
    sub.add_parser("report", help="reports: `proxysuite report compare-modes RESULTS... [-o DIR]`", add_help=False)
    sub.add_parser("perf", help="perf sweep outside pytest: `proxysuite perf run --mode M --scales 100,1k,5k,10k`", add_help=False)
    from .cluster.kindsetup import cli as kind_cli

    kind_cli.add_parser(sub)
    from . import alerts

    alerts.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    if argv[:1] in (["report"], ["perf"]):
        args, rest = ap.parse_args(argv[:1]), argv[1:]
    else:
        args, rest = ap.parse_args(argv), []
    try:
        if args.command == "cluster":
            return cmd_cluster(args)
        if args.command == "janitor":
            return cmd_janitor(args)
        if args.command == "images":
            return cmd_images(args)
        if args.command == "version":
            return cmd_version(args)
        if args.command == "perf":
            return cmd_perf(args, rest)
        if args.command == "kind":
            from .cluster.kindsetup import cli as kind_cli

            return kind_cli.run(args)
        if args.command == "alerts":
            from . import alerts

            return alerts.run(args)
        return cmd_report(args, rest)
    except Unsupported as exc:
        print(f"proxysuite: unsupported here: {exc}", file=sys.stderr)
        return 3
    except SuiteError as exc:
        print(f"proxysuite: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("proxysuite: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `proxysuite images | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
