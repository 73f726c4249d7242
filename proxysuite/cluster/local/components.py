"""Build and cache the pinned components the local provider runs.

``proxysuite/data/components/go.mod`` (package data) pins Kubernetes (and, through it, etcd); this module
builds kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy,
etcd and agnhost from it, statically, and caches the binaries under
``~/.cache/proxysuite/components/<version>-<go.mod hash>/``. A second run with
the same pins reuses them. A cold build takes 6–10 minutes on 2 cores; progress
is printed per binary.

Why the Go version matters: Go 1.27 enables the jsonv2 experiment by default,
and kube-apiserver's /openapi/v2 then serialises wrongly (kubectl apply fails
with "failed to download openapi"). We build with the Go minor version the
Kubernetes release's go.mod names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
    digest: str


def read_pins(mod: Path | None = None) -> Pins:
    mod = mod or module_dir()
    gomod = mod / "go.mod"
    if not gomod.exists():
        raise SuiteError(f"{gomod} is missing", "reinstall proxysuite (the package ships it), or point PROXYSUITE_COMPONENTS_DIR at a folder with go.mod and go.sum")
    text = gomod.read_text()
    k8s = re.search(r"k8s\.io/kubernetes (v[0-9][^\s]*)", text)
    go = re.search(r"^go (\d+\.\d+)", text, re.M)
    if not k8s or not go:
        raise SuiteError(f"{gomod} does not pin k8s.io/kubernetes and a go version", f"restore {gomod} from git or reinstall proxysuite")
    h = hashlib.sha256(text.encode())
    gosum = mod / "go.sum"
    if gosum.exists():
        h.update(gosum.read_bytes())
    return Pins(k8s.group(1), go.group(1), h.hexdigest()[:12])


def bin_dir(pins: Pins) -> Path:
    return default_cache_root() / "components" / f"{pins.kubernetes}-{pins.digest}"


def _go_version() -> str | None:
    go = shutil.which("go")
    if not go:
        return None
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout.strip()
    m = re.match(r"go(\d+\.\d+)", out)
    return m.group(1) if m else None


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

    go_minor = _go_version()
    if go_minor is None:
        raise SuiteError("building the local components needs Go, and `go` is not on PATH", f"install Go {pins.go_minor}.x (apt or golang.org) and retry")
    if go_minor != pins.go_minor:
        raise SuiteError(
            f"Kubernetes {pins.kubernetes} must be built with Go {pins.go_minor}.x, but `go` is {go_minor}",
            f"export GOTOOLCHAIN=go{pins.go_minor}.0+auto (or install Go {pins.go_minor}); Go 1.27 breaks the apiserver's OpenAPI",
        )
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
    todo = [n for n, p in paths.items() if not p.exists()]
    progress(f"building {len(todo)} component(s) of Kubernetes {pins.kubernetes} with Go {go_minor} into {out} "
             "(cold: 6-10 min on 2 cores; cached afterwards)")
    for i, name in enumerate(todo, 1):
        started = time.monotonic()
        progress(f"  [{i}/{len(todo)}] go build {PACKAGES[name]} ...")
        tmp = out / f".{name}.tmp"
        proc = subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", _ldflags(pins.kubernetes), "-o", str(tmp), PACKAGES[name]],
            cwd=module_dir(), env=env, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise SuiteError(f"building {name} failed:\n{tail}", "check network access to the Go module proxy and free disk space")
        tmp.rename(paths[name])
        progress(f"  [{i}/{len(todo)}] {name} built in {time.monotonic() - started:.0f}s")
    manifest.write_text(json.dumps({"kubernetes": pins.kubernetes, "go": go_minor, "components": sorted(PACKAGES)}, indent=1))
    return paths


if __name__ == "__main__":
    import sys

    try:
        for name, path in ensure(progress=lambda m: print(f"[components] {m}", file=sys.stderr, flush=True)).items():
            print(f"{name}\t{path}")
    except SuiteError as exc:
        print(f"proxysuite: {exc}", file=sys.stderr)
        sys.exit(2)
