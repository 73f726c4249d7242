"""``proxysuite``: bring clusters up and down, clean up after crashes, build reports.

    proxysuite cluster up     [--provider local] [--mode iptables] [--nodes 2] ...
    proxysuite cluster down   [--provider local] [--mode iptables | --cluster-name NAME]
    proxysuite cluster status [...]
    proxysuite cluster env    [...]        # prints `export KUBECONFIG=...`
    proxysuite janitor        [--all]      # removes what crashed runs left behind
    proxysuite images         [--mode M]   # every image the suite pulls (for air-gapped preloading)
    proxysuite kind setup-engine | build-node-image | stop-engine   # kind where it is missing
    proxysuite perf run       [cluster options] [--scales 100,1k,5k,10k] ...   # the perf sweep outside pytest
    proxysuite report compare-modes RESULTS... [-o DIR]

Exit codes: 0 ok, 2 bad input or unusable environment (one line naming the fix), 3 unsupported here.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import DEFAULT_K8S_VERSION, OPTIONS, SuiteConfig
from .errors import SuiteError, Unsupported


def _progress(msg: str) -> None:
    print(f"[proxysuite] {msg}", file=sys.stderr, flush=True)


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    for opt in OPTIONS:
        if opt.name == "reports-dir":
            continue
        if opt.flag:
            p.add_argument(f"--{opt.name}", action="store_true", default=opt.default, help=opt.help)
        else:
            p.add_argument(f"--{opt.name}", type=opt.type, default=opt.default, choices=opt.choices,
                           help=f"{opt.help} (default: {opt.default})")


def _config(args: argparse.Namespace) -> SuiteConfig:
    values = {opt.name: getattr(args, opt.name.replace("-", "_"), None) for opt in OPTIONS}
    return SuiteConfig.from_mapping({k: v for k, v in values.items() if v is not None})


def cmd_cluster(args: argparse.Namespace) -> int:
    from .cluster import get_provider

    cfg = _config(args)
    provider = get_provider(cfg)
    if args.action == "up":
        cl = provider.up(cfg, progress=_progress)
        print(f"export KUBECONFIG={cl.kubeconfig}")
        return 0
    if args.action == "down":
        provider.down(cfg, progress=_progress)
        return 0
    st = provider.status(cfg)
    if args.action == "status":
        print(json.dumps(st, indent=2))
        return 0 if st.get("exists") else 1
    if not st.get("exists"):
        raise SuiteError(f"no {cfg.provider} cluster named {cfg.name}", f"run `proxysuite cluster up --provider {cfg.provider} --mode {cfg.mode}` first")
    print(f"export KUBECONFIG={st['kubeconfig']}")
    return 0


def cmd_janitor(args: argparse.Namespace) -> int:
    from .cluster.local import provider

    provider.janitor(progress=_progress, everything=args.all)
    from .cluster.kindsetup import engine

    engine.janitor(progress=_progress, everything=args.all)
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from . import images

    print(images.format_images(args.mode, args.provider, args.k8s_version))
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
    ap = argparse.ArgumentParser(prog="proxysuite", description="Kubernetes Service proxy conformance and performance suite")
    sub = ap.add_subparsers(dest="command", required=True)
    cl = sub.add_parser("cluster", help="bring a cluster up or down, show it, print its KUBECONFIG")
    cl.add_argument("action", choices=("up", "down", "status", "env"),
                    help="up: create or reuse; down: remove; status: JSON health; env: print export KUBECONFIG=...")
    _add_cluster_options(cl)
    jan = sub.add_parser("janitor", help="remove namespaces, processes and state that crashed runs left")
    jan.add_argument("--all", action="store_true", help="also remove clusters kept on purpose (cluster up, --keep-cluster)")
    img = sub.add_parser("images", help="list every container image the suite pulls (kind/existing), for preloading")
    img.add_argument("--mode", default=None, help="only the images this mode needs (default: every mode)")
    img.add_argument("--provider", default="kind", choices=("kind", "existing", "local"), help="the provider that would pull them (default: kind)")
    img.add_argument("--k8s-version", default=DEFAULT_K8S_VERSION, help="picks the kind node image")
    sub.add_parser("report", help="reports: `proxysuite report compare-modes RESULTS... [-o DIR]`", add_help=False)
    sub.add_parser("perf", help="perf sweep outside pytest: `proxysuite perf run --mode M --scales 100,1k,5k,10k`", add_help=False)
    from .cluster.kindsetup import cli as kind_cli

    kind_cli.add_parser(sub)
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
        if args.command == "perf":
            return cmd_perf(args, rest)
        if args.command == "kind":
            from .cluster.kindsetup import cli as kind_cli

            return kind_cli.run(args)
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
