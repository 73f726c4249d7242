"""Build and cache the pinned components the local provider runs.

``proxysuite/data/components/go.mod`` (package data) pins Kubernetes (and, through it, etcd) and the exact
Go toolchain (its ``toolchain`` line); this module builds kube-apiserver,
kube-controller-manager, kube-scheduler, kube-proxy, kubectl, etcd and agnhost
from it, statically, and caches the binaries under
``~/.cache/proxysuite/components/<version>-<go.mod hash>/``. A second run with
the same pins reuses them. A cold build takes about 13 minutes on 2 cores;
progress is printed per binary.

Why the Go version matters: Go 1.27 enables the jsonv2 experiment by default,
and kube-apiserver's /openapi/v2 then serialises wrongly (kubectl apply fails
with "failed to download openapi"). We build with the toolchain the Kubernetes
release itself names (its ``.go-version``). When ``go`` on PATH is another
version, or missing, the pinned toolchain is fetched once as the module
``golang.org/toolchain`` through the configured Go module proxy (``go mod
download`` with whatever ``go`` is at hand, e.g. Debian's ``golang-go``, which
``scripts/bootstrap`` installs) into ``~/.cache/proxysuite/go/<version>/``;
nothing outside that directory is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from ...config import default_cache_root
from ...data import COMPONENTS_MODULE
from ...errors import SuiteError

# binary name -> Go package (all resolved through proxysuite/data/components/go.mod)
PACKAGES = {
    "etcd": "go.etcd.io/etcd/server/v3",
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    # For the user and the tests (README examples, the existing provider on a local cluster): a kubectl of the
    # cluster's own version, so no version skew and nothing to install.
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "agnhost": "k8s.io/kubernetes/test/images/agnhost",
}


def module_dir() -> Path:
    env = os.environ.get("PROXYSUITE_COMPONENTS_DIR")
    if env:
        return Path(env)
    return COMPONENTS_MODULE


@dataclass(frozen=True)
class Pins:
    kubernetes: str
    go_minor: str
    toolchain: str  # exact Go release, e.g. go1.26.10
    digest: str


def read_pins(mod: Path | None = None) -> Pins:
    mod = mod or module_dir()
    gomod = mod / "go.mod"
    if not gomod.exists():
        raise SuiteError(f"{gomod} is missing", "reinstall proxysuite (the package ships it), or point PROXYSUITE_COMPONENTS_DIR at a folder with go.mod and go.sum")
    text = gomod.read_text()
    k8s = re.search(r"k8s\.io/kubernetes (v[0-9][^\s]*)", text)
    go = re.search(r"^go (\d+\.\d+)", text, re.M)
    toolchain = re.search(r"^toolchain (go\d+\.\d+\.\d+)\s*$", text, re.M)
    if not k8s or not go or not toolchain or not toolchain.group(1).startswith(f"go{go.group(1)}."):
        raise SuiteError(f"{gomod} does not pin k8s.io/kubernetes, a go version and an exact toolchain of that minor",
                         f"restore {gomod} from git or reinstall proxysuite")
    h = hashlib.sha256(text.encode())
    gosum = mod / "go.sum"
    if gosum.exists():
        h.update(gosum.read_bytes())
    return Pins(k8s.group(1), go.group(1), toolchain.group(1), h.hexdigest()[:12])


def bin_dir(pins: Pins) -> Path:
    return default_cache_root() / "components" / f"{pins.kubernetes}-{pins.digest}"


def go_dir(pins: Pins) -> Path:
    """GOROOT of the project's own copy of the pinned toolchain."""
    return default_cache_root() / "go" / pins.toolchain


def _go_env() -> dict[str, str]:
    # GOTOOLCHAIN=local: the binary we chose runs itself, never a toolchain a go.mod asks for.
    # No GOROOT: a user's GOROOT for another Go would mix its standard library into our build.
    env = {k: v for k, v in os.environ.items() if k != "GOROOT"}
    env["GOTOOLCHAIN"] = "local"
    return env


def _go_version(go: str | Path) -> str | None:
    """``go1.26.10`` for that binary, or None when it does not run."""
    try:
        out = subprocess.run([str(go), "env", "GOVERSION"], capture_output=True, text=True, env=_go_env(), timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.match(r"go\d+\.\d+(\.\d+)?", out.strip())
    return m.group(0) if m else None


def find_go(pins: Pins) -> Path | None:
    """The pinned toolchain if it is here already: the project's copy, or ``go`` on PATH when it is that exact release."""
    own = go_dir(pins) / "bin" / "go"
    if own.exists() and _go_version(own) == pins.toolchain:
        return own
    on_path = shutil.which("go")
    if on_path and _go_version(on_path) == pins.toolchain:
        return Path(on_path)
    return None


def _goarch() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if not arch:
        raise SuiteError(f"no Go toolchain is pinned for this machine's architecture ({machine})", "build on amd64 or arm64")
    return arch


def _allow_exec(root: Path) -> None:
    # A module zip keeps no file modes; `go` does the same fix-up after switching toolchains itself.
    tools = [p for p in (root / "pkg" / "tool").rglob("*") if p.is_file()]
    bins = [p for p in (root / "bin").iterdir() if p.is_file()]
    execs = [p for p in (root / "lib").rglob("go_*_*_exec") if p.is_file()]
    for p in tools + execs + bins:  # bin/go last: once it runs, everything it calls is executable
        p.chmod(p.stat().st_mode | 0o111)


def install_go(pins: Pins, progress: Callable[[str], None] = print) -> Path:
    """Fetch the pinned toolchain into ``go_dir(pins)`` and return its ``go``.

    Any ``go`` with module support can download it: the toolchain is the module
    ``golang.org/toolchain@v0.0.1-<release>.<os>-<arch>``, served by the configured
    module proxy and verified against the checksum database like any module.
    """
    bootstrap = shutil.which("go")
    if not bootstrap:
        raise SuiteError(f"building the local components needs Go {pins.toolchain}, and there is no `go` to fetch it with",
                         "run scripts/bootstrap (it installs Debian's golang-go for that), or put any go on PATH")
    target = go_dir(pins)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Tests and xdist workers may ask at once; the second waits and finds the first one's copy.
    with FileLock(str(target.parent / f".{pins.toolchain}.lock")):
        own = target / "bin" / "go"
        if own.exists() and _go_version(own) == pins.toolchain:
            return own
        return _fetch_go(pins, bootstrap, target, progress)


def _fetch_go(pins: Pins, bootstrap: str, target: Path, progress: Callable[[str], None]) -> Path:
    module = f"golang.org/toolchain@v0.0.1-{pins.toolchain}.linux-{_goarch()}"
    progress(f"fetching Go {pins.toolchain} ({module}) with {bootstrap} into {target}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{pins.toolchain}-") as tmp:
        # A throwaway module cache next to the target: the rename below stays on one filesystem, and
        # -modcacherw leaves it writable so the temporary directory can be removed.
        env = {**_go_env(), "GOMODCACHE": os.path.join(tmp, "mod"), "GOFLAGS": "-modcacherw", "GO111MODULE": "on"}
        Path(tmp, "go.mod").write_text("module proxysuite.local/fetch-toolchain\n")
        proc = subprocess.run([bootstrap, "mod", "download", "-json", module], cwd=tmp, env=env, capture_output=True, text=True)
        try:
            extracted = Path(json.loads(proc.stdout)["Dir"])
        except (ValueError, KeyError):
            extracted = None
        if proc.returncode != 0 or extracted is None or not (extracted / "bin" / "go").exists():
            tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-8:])
            raise SuiteError(f"fetching Go {pins.toolchain} failed:\n{tail}",
                             "check access to the Go module proxy (go env GOPROXY) and free disk space")
        _allow_exec(extracted)
        if target.exists():  # a copy that does not run (interrupted fetch, wrong version): replace it
            shutil.rmtree(target)
        extracted.rename(target)
    go = target / "bin" / "go"
    if _go_version(go) != pins.toolchain:
        raise SuiteError(f"{go} does not run as Go {pins.toolchain}", f"remove {target} and run scripts/bootstrap again")
    progress(f"Go {pins.toolchain} ready in {time.monotonic() - started:.0f}s")
    return go


def _ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def ensure(wanted_version: str | None = None, progress: Callable[[str], None] = print) -> dict[str, Path]:
    """Return {name: path} of every component, building what the cache lacks."""
    pins = read_pins()
    if wanted_version and wanted_version != pins.kubernetes:
        raise SuiteError(
            f"the local provider pins Kubernetes {pins.kubernetes}, not {wanted_version}",
            f"use --k8s-version {pins.kubernetes}, or change the pin in {module_dir() / 'go.mod'}",
        )
    out = bin_dir(pins)
    paths = {name: out / name for name in PACKAGES}
    manifest = out / "manifest.json"
    if manifest.exists() and all(p.exists() for p in paths.values()):
        return paths

    go = find_go(pins) or install_go(pins, progress)
    out.mkdir(parents=True, exist_ok=True)
    env = {**_go_env(), "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
    todo = [n for n, p in paths.items() if not p.exists()]
    progress(f"building {len(todo)} component(s) of Kubernetes {pins.kubernetes} with {go} ({pins.toolchain}) into {out} "
             "(cold: about 13 min on 2 cores; cached afterwards)")
    for i, name in enumerate(todo, 1):
        started = time.monotonic()
        progress(f"  [{i}/{len(todo)}] go build {PACKAGES[name]} ...")
        tmp = out / f".{name}.tmp"
        proc = subprocess.run(
            [str(go), "build", "-trimpath", "-ldflags", _ldflags(pins.kubernetes), "-o", str(tmp), PACKAGES[name]],
            cwd=module_dir(), env=env, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise SuiteError(f"building {name} failed:\n{tail}", "check network access to the Go module proxy and free disk space")
        tmp.rename(paths[name])
        progress(f"  [{i}/{len(todo)}] {name} built in {time.monotonic() - started:.0f}s")
    manifest.write_text(json.dumps({"kubernetes": pins.kubernetes, "go": pins.toolchain, "components": sorted(PACKAGES)}, indent=1))
    return paths


if __name__ == "__main__":
    import sys

    try:
        for name, path in ensure(progress=lambda m: print(f"[components] {m}", file=sys.stderr, flush=True)).items():
            print(f"{name}\t{path}")
    except SuiteError as exc:
        print(f"proxysuite: {exc}", file=sys.stderr)
        sys.exit(2)
