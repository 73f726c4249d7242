"""Build and cache promtool, which tests the alerting rules (``promtool test rules``).

``proxysuite/data/promtool/go.mod`` (package data) pins ``github.com/prometheus/prometheus`` and its
``cmd/promtool`` as a Go tool; this module builds it once, statically, with the same pinned Go toolchain as
the Kubernetes components (``proxysuite.cluster.local.components``, fetched the same way when missing), under
``nice``, into ``~/.cache/proxysuite/promtool/<prometheus version>-<go.mod hash>/promtool``. A second run
with the same pins reuses it. ``scripts/bootstrap`` runs it, so ``make test`` has promtool; tests call
:func:`ensure` too, so a checkout without bootstrap still builds it (once).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock

from ..cluster.local import components
from ..config import default_cache_root
from ..data import PROMTOOL_MODULE
from ..errors import SuiteError

PACKAGE = "github.com/prometheus/prometheus/cmd/promtool"


def module_dir() -> Path:
    return Path(os.environ.get("PROXYSUITE_PROMTOOL_DIR") or PROMTOOL_MODULE)


def pinned_version(mod: Path | None = None) -> tuple[str, str]:
    """(prometheus module version, short hash of go.mod + go.sum)."""
    mod = mod or module_dir()
    gomod = mod / "go.mod"
    text = gomod.read_text() if gomod.exists() else ""
    m = re.search(r"github\.com/prometheus/prometheus (v\S+)", text)
    if not m:
        raise SuiteError(f"{gomod} does not pin github.com/prometheus/prometheus", f"restore {gomod} from git or reinstall proxysuite")
    h = hashlib.sha256(text.encode())
    if (mod / "go.sum").exists():
        h.update((mod / "go.sum").read_bytes())
    return m.group(1), h.hexdigest()[:12]


def path() -> Path:
    version, digest = pinned_version()
    return default_cache_root() / "promtool" / f"{version}-{digest}" / "promtool"


def ensure(progress: Callable[[str], None] = print) -> Path:
    """The cached promtool, built first when the cache lacks it."""
    target = path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / ".build.lock")):  # xdist workers and a bootstrap may ask at once
        if target.exists():
            return target
        return _build(target, progress)


def _build(target: Path, progress: Callable[[str], None]) -> Path:
    pins = components.read_pins()  # the components' toolchain: one Go to fetch and cache, not two
    go = components.find_go(pins) or components.install_go(pins, progress)
    version, _ = pinned_version()
    progress(f"building promtool ({PACKAGE}@{version}) with {go} into {target.parent} "
             "(cold: 10 CPU-minutes, 5 to 10 minutes on 2 cores; cached afterwards)")
    started = time.monotonic()
    env = {**components._go_env(), "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
    tmp = target.with_name(".promtool.tmp")
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []  # other builds and clusters share the cores
    proc = subprocess.run([*nice, str(go), "build", "-trimpath", "-ldflags",
                           f"-s -w -X github.com/prometheus/common/version.Version={version.lstrip('v')}",
                           "-o", str(tmp), PACKAGE], cwd=module_dir(), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SuiteError(f"building promtool failed:\n{tail}", "check access to the Go module proxy (go env GOPROXY) and free disk space")
    tmp.rename(target)
    progress(f"promtool built in {time.monotonic() - started:.0f}s")
    return target


if __name__ == "__main__":
    try:
        print(ensure(progress=lambda m: print(f"[promtool] {m}", file=sys.stderr, flush=True)))
    except SuiteError as exc:
        print(f"proxysuite: {exc}", file=sys.stderr)
        sys.exit(2)
