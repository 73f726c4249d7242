"""``proxysuite kind ...``: registered from :mod:`proxysuite.cli` with two calls, :func:`add_parser` and :func:`run`."""

from __future__ import annotations

import argparse
import sys


def _progress(msg: str) -> None:
    print(f"[proxysuite kind] {msg}", file=sys.stderr, flush=True)


def add_parser(sub) -> None:
    p = sub.add_parser("kind", help="set up kind where it is missing: a Docker engine, kind, an offline node image")
    acts = p.add_subparsers(dest="kind_action", required=True)
    se = acts.add_parser("setup-engine", help="install Debian's docker.io and kind when missing; start the suite's "
                         "engine (own network namespace) when no engine answers; fix privileged containers")
    se.add_argument("--no-install", action="store_true", help="never run apt-get or go install; fail naming what is missing")
    acts.add_parser("build-node-image", help="build a kind node image for the pinned Kubernetes from Debian packages and "
                    "Go modules only (no registry); prints the image reference (cached by content)")
    acts.add_parser("build-cilium", help="build Cilium and Helm from their pinned Go modules (cached; ~11 min cold on 2 "
                    "cores) and import the agent and operator images into the engine; prints the image references "
                    "(docs/cilium.md)")
    st = acts.add_parser("stop-engine", help="stop the suite's own Docker engine (never an engine it did not start)")
    st.add_argument("--force", action="store_true", help="also remove the containers (kind nodes) still on it")
    st.add_argument("--purge", action="store_true", help="also remove its data root: every image and container on it")


def run(args: argparse.Namespace) -> int:
    from . import engine

    if args.kind_action == "setup-engine":
        kind = engine.ensure_kind(_progress) if not args.no_install else None
        eng = engine.setup(_progress, install=not args.no_install)
        print(f"export DOCKER_HOST={eng.docker_host}")
        if kind is not None:
            print(f"export PATH={kind.parent}:$PATH")
        return 0
    if args.kind_action == "build-node-image":
        from . import nodeimage

        engine.adopt()
        print(nodeimage.build(_progress))
        return 0
    if args.kind_action == "build-cilium":
        from . import cilium

        engine.adopt()
        for role, ref in cilium.build_images(_progress).items():
            print(f"{role}\t{ref}")
        return 0
    if args.kind_action == "stop-engine":
        if not engine.stop_engine(_progress, force=args.force, purge=args.purge):
            _progress("the suite's Docker engine is not running")
        return 0
    raise AssertionError(args.kind_action)
