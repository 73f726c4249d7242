"""Build and cache Cilium and Helm for ``--provider kind --mode cilium`` from Go modules only (no registry).

``proxysuite/data/cilium/go.mod`` pins ``github.com/cilium/cilium`` (agent, operator, ``cilium-dbg``,
``cilium-health``, the CNI plugin and the helpers two init containers run); ``proxysuite/data/helm/go.mod``
pins Helm, in a module of its own so Helm's Kubernetes libraries do not move Cilium's. Both are built statically
with the Kubernetes components' pinned toolchain (``proxysuite.cluster.local.components``, one Go to fetch and
cache), under ``nice``, into ``~/.cache/proxysuite/cilium/<cilium version>-<hash of both modules>/``. A second
run with the same pins reuses them. Cold: about 11 minutes for Cilium (the agent alone ~9.5) measured nice'd on
a shared 2-core machine, plus Helm.

The same module directory holds what the agent image needs besides binaries: the BPF C sources the agent
compiles at start (``bpf/``, installed at ``/var/lib/cilium/bpf``) and the Helm chart
(``install/kubernetes/cilium``); :func:`source_dir` finds it. docs/cilium.md lists the runtime needs and every
piece of the chart that could touch the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from ...config import default_cache_root
from ...data import CILIUM_MODULE, HELM_MODULE
from ...errors import SuiteError
from ..local import components
from . import engine, rootfs

Progress = Callable[[str], None]

CILIUM = "github.com/cilium/cilium"
HELM = "helm.sh/helm/v3"

# binary -> (module, Go package, build tags). The agent image's set is Cilium's SUBDIRS_CILIUM_CONTAINER
# (Makefile) minus bugtool, hubble and the envoy helper, which the values the suite installs leave unused.
BINARIES: dict[str, tuple[str, str, str]] = {
    "cilium-agent": ("cilium", f"{CILIUM}/daemon", ""),
    # operator/Makefile: cilium-operator-generic is the operator with only the cluster-pool/kubernetes IPAM.
    "cilium-operator-generic": ("cilium", f"{CILIUM}/operator", "ipam_provider_operator"),
    "cilium-dbg": ("cilium", f"{CILIUM}/cilium-dbg", ""),
    "cilium-health": ("cilium", f"{CILIUM}/cilium-health", ""),
    "cilium-cni": ("cilium", f"{CILIUM}/plugins/cilium-cni", ""),
    "cilium-mount": ("cilium", f"{CILIUM}/tools/mount", ""),
    "cilium-sysctlfix": ("cilium", f"{CILIUM}/tools/sysctlfix", ""),
    "helm": ("helm", f"{HELM}/cmd/helm", ""),
}


@dataclass(frozen=True)
class Pins:
    cilium: str  # e.g. v1.20.2
    helm: str  # e.g. v3.22.0
    helm_client_go: str  # the k8s.io/client-go Helm is built with: its default capabilities' Kubernetes version
    digest: str


def module_dirs() -> dict[str, Path]:
    """The two pinning modules; ``PROXYSUITE_CILIUM_DIR`` / ``PROXYSUITE_HELM_DIR`` override them (tests)."""
    return {"cilium": Path(os.environ.get("PROXYSUITE_CILIUM_DIR") or CILIUM_MODULE),
            "helm": Path(os.environ.get("PROXYSUITE_HELM_DIR") or HELM_MODULE)}


def _require(text: str, module: str, gomod: Path) -> str:
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\d+\.\d+\.\d+)\s*(?://.*)?$", text, re.M)
    if not m:
        raise SuiteError(f"{gomod} does not pin {module} at a release", f"restore {gomod} from git or reinstall proxysuite")
    return m.group(1)


def read_pins(dirs: dict[str, Path] | None = None) -> Pins:
    dirs = dirs or module_dirs()
    h = hashlib.sha256()
    texts = {}
    for name, mod in sorted(dirs.items()):
        gomod = mod / "go.mod"
        if not gomod.exists():
            raise SuiteError(f"{gomod} is missing", "reinstall proxysuite (the package ships it)")
        texts[name] = gomod.read_text()
        # Every file of the module decides what is built: go.sum, and the stand-in module a replace points at.
        for f in sorted(p for p in mod.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(mod)).encode() + b"\0" + f.read_bytes())
    # The build recipe is part of the key: another tag or package set is another cache entry.
    h.update(json.dumps(BINARIES, sort_keys=True).encode())
    return Pins(cilium=_require(texts["cilium"], CILIUM, dirs["cilium"] / "go.mod"),
                helm=_require(texts["helm"], HELM, dirs["helm"] / "go.mod"),
                helm_client_go=_require(texts["helm"], "k8s.io/client-go", dirs["helm"] / "go.mod"),
                digest=h.hexdigest()[:12])


def bin_dir(pins: Pins) -> Path:
    return default_cache_root() / "cilium" / f"{pins.cilium}-{pins.digest}"


def ldflags(name: str, pins: Pins) -> str:
    if BINARIES[name][0] == "helm":
        # Helm's Makefile: its default .Capabilities.KubeVersion is client-go's minor with major 1.
        _, minor, _ = pins.helm_client_go.lstrip("v").split(".")
        return " ".join(["-s -w", f"-X helm.sh/helm/v3/internal/version.version={pins.helm}",
                         "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
                         "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1", f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}",
                         "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1", f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}"])
    # Makefile.defs: ciliumVersion is "<VERSION> <git short hash> <author date>"; pkg/version parses the first word.
    return f"-s -w -X 'github.com/cilium/cilium/pkg/version.ciliumVersion={pins.cilium.lstrip('v')} {pins.cilium} 1970-01-01T00:00:00Z'"


def ensure(progress: Progress = print) -> dict[str, Path]:
    """{binary: path} of every binary in :data:`BINARIES`, building what the cache lacks."""
    pins = read_pins()
    out = bin_dir(pins)
    paths = {name: out / name for name in BINARIES}
    manifest = out / "manifest.json"
    if manifest.exists() and all(p.exists() for p in paths.values()):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / ".build.lock")):  # a second caller waits and finds the first one's binaries
        todo = [n for n, p in paths.items() if not p.exists()]
        if todo:
            _build(pins, todo, out, progress)
        manifest.write_text(json.dumps({"cilium": pins.cilium, "helm": pins.helm, "binaries": sorted(BINARIES)}, indent=1))
    return paths


def _build(pins: Pins, todo: list[str], out: Path, progress: Progress) -> None:
    cpins = components.read_pins()  # the components' toolchain: one Go to fetch and cache, not two
    go = components.find_go(cpins) or components.install_go(cpins, progress)
    env = {**components._go_env(), "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []  # other builds and clusters share the cores
    dirs = module_dirs()
    progress(f"building {len(todo)} binaries of Cilium {pins.cilium} and Helm {pins.helm} with {go} ({cpins.toolchain}) "
             f"into {out} (cold: ~11 min on 2 cores, the agent most of it; cached afterwards)")
    for i, name in enumerate(todo, 1):
        module, package, tags = BINARIES[name]
        started = time.monotonic()
        tmp = out / f".{name}.tmp"
        proc = subprocess.run([*nice, str(go), "build", "-trimpath", "-tags", tags, "-ldflags", ldflags(name, pins),
                               "-o", str(tmp), package], cwd=dirs[module], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise SuiteError(f"building {name} ({package}) failed:\n{tail}",
                             "check access to the Go module proxy (go env GOPROXY) and free disk space")
        tmp.rename(out / name)
        progress(f"  [{i}/{len(todo)}] {name} built in {time.monotonic() - started:.0f}s")


def source_dir(progress: Progress = print) -> Path:
    """The pinned Cilium module's directory (module cache): ``bpf/`` and ``install/kubernetes/cilium`` live there."""
    cpins = components.read_pins()
    go = components.find_go(cpins) or components.install_go(cpins, progress)
    proc = subprocess.run([str(go), "list", "-m", "-json", CILIUM], cwd=module_dirs()["cilium"],
                          env={**components._go_env(), "GOFLAGS": "-mod=readonly"}, capture_output=True, text=True)
    try:
        path = Path(json.loads(proc.stdout)["Dir"])
    except (ValueError, KeyError):
        raise SuiteError(f"cannot locate the {CILIUM} module: {proc.stderr.strip()[-300:]}",
                         "run `python -m proxysuite.cluster.kindsetup.cilium` once (it downloads and builds the module)") from None
    if not (path / "bpf").is_dir() or not (path / "install/kubernetes/cilium/Chart.yaml").is_file():
        raise SuiteError(f"{path} has no bpf/ or install/kubernetes/cilium", "clear that module cache entry (go clean -modcache) and rebuild")
    return path


def chart_dir(progress: Progress = print) -> Path:
    return source_dir(progress) / "install" / "kubernetes" / "cilium"


# Makefile.defs: BPF_SRCFILES is bpf/ minus these (tests, build files), installed under /var/lib/cilium/bpf.
BPF_IGNORED = ("tests/", "complexity-tests/", "custom/", "Makefile", "Makefile.bpf", ".gitignore")

AGENT_BINARIES = ("cilium-agent", "cilium-dbg", "cilium-health", "cilium-mount", "cilium-sysctlfix")


def _add(tar: tarfile.TarFile, name: str, path: Path | None = None, *, mode: int = 0o644, link: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if link is not None:
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, link, 0o777
        tar.addfile(info)
        return
    assert path is not None
    info.size, info.mode = path.stat().st_size, mode  # the module cache is read-only (0444): set modes here
    with open(path, "rb") as fh:
        tar.addfile(info, fh)


def agent_overlay(out: Path, bins: dict[str, Path], src: Path) -> Path:
    """What images/cilium/Dockerfile copies onto the runtime image, as a tarball for ``ADD``."""
    with tarfile.open(out, "w") as tar:
        for name in AGENT_BINARIES:
            _add(tar, f"usr/bin/{name}", bins[name], mode=0o755)
        _add(tar, "opt/cni/bin/cilium-cni", bins["cilium-cni"], mode=0o755)
        _add(tar, "init-container.sh", src / "images/cilium/init-container.sh", mode=0o755)
        for script in ("install-plugin.sh", "cni-uninstall.sh"):
            _add(tar, script, src / "plugins/cilium-cni" / script, mode=0o755)
        _add(tar, "cni/loopback", link="/usr/lib/cni/loopback")  # build-cni.sh puts loopback there; Debian's plugin
        # compile.go runs "clang" from PATH; Debian names it clang-19 (and llc-19), the release upstream ships.
        _add(tar, "usr/local/bin/clang", link="/usr/bin/clang-19")
        _add(tar, "usr/local/bin/llc", link="/usr/bin/llc-19")
        for f in sorted((src / "bpf").rglob("*")):
            rel = f.relative_to(src / "bpf").as_posix()
            if f.is_file() and not any(rel == i or rel.startswith(i) for i in BPF_IGNORED):
                _add(tar, f"var/lib/cilium/bpf/{rel}", f)
    return out


# `docker import` keeps no ENV: containerd would add a default PATH, but the chart runs bare command names.
PATH_ENV = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
AGENT_LINES = ["ADD overlay.tar /", PATH_ENV, "WORKDIR /home/cilium", "ENV INITSYSTEM=SYSTEMD", 'CMD ["/usr/bin/cilium-dbg"]']
OPERATOR_CHANGES = [PATH_ENV, 'ENTRYPOINT ["/usr/bin/cilium-operator-generic"]']


def image_refs(pins: Pins, tree: Path) -> dict[str, str]:
    recipe = json.dumps([AGENT_BINARIES, BPF_IGNORED, AGENT_LINES, OPERATOR_CHANGES])
    key = hashlib.sha256(f"{pins.digest} {tree.name} {recipe}".encode()).hexdigest()[:12]
    return {"agent": f"proxysuite/cilium:{pins.cilium}-{key}", "operator": f"proxysuite/cilium-operator-generic:{pins.cilium}-{key}"}


def build_images(progress: Progress = print, docker_host: str | None = None) -> dict[str, str]:
    """Import the agent and operator images into the engine (no registry); returns their references.

    Agent: a bookworm rootfs with Cilium's runtime packages (``rootfs.CILIUM_PACKAGES``) plus the overlay above.
    Operator: its static binary alone.
    """
    from .nodeimage import Builder  # nodeimage imports much of the kind setup; only image builds need it

    host = docker_host or os.environ.get("DOCKER_HOST") or engine.adopt() or f"unix://{engine.DEFAULT_SOCKET}"
    if not engine.server_version(host):
        raise SuiteError(f"no Docker engine answers on {host}", "run `proxysuite kind setup-engine` first (or set DOCKER_HOST)")
    pins = read_pins()
    bins = ensure(progress)
    src = source_dir(progress)
    tree = rootfs.build("cilium", rootfs.CILIUM_PACKAGES, progress)
    refs = image_refs(pins, tree)
    b = Builder(host, progress)
    try:
        if not b.has_image(refs["agent"]):
            base = f"proxysuite/cilium-runtime:{tree.stem.rsplit('-', 1)[-1]}"
            if not b.has_image(base):
                b.import_tar(tree, base, [])
            overlay = agent_overlay(Path(tempfile.mkdtemp(dir=b.scratch)) / "overlay.tar", bins, src)
            b.build_from(base, refs["agent"], AGENT_LINES, {"overlay.tar": overlay})
        if not b.has_image(refs["operator"]):
            b.import_tar(engine.single_binary_tar({"usr/bin/cilium-operator-generic": bins["cilium-operator-generic"]}),
                         refs["operator"], OPERATOR_CHANGES)
    finally:
        b.close()
    progress(f"images: {refs['agent']}, {refs['operator']}")
    return refs


def helm_image_args(refs: dict[str, str]) -> list[str]:
    """``helm`` arguments that point the chart at the imported images; ``Never``: there is no registry to ask."""
    return ["--set", f"image.override={refs['agent']}", "--set", "image.pullPolicy=Never",
            "--set", f"operator.image.override={refs['operator']}", "--set", "operator.image.pullPolicy=Never"]


if __name__ == "__main__":
    def _progress(m: str) -> None:
        print(f"[cilium] {m}", file=sys.stderr, flush=True)

    try:
        for name, path in ensure(_progress).items():
            print(f"{name}\t{path}")
        print(f"source\t{source_dir(_progress)}")
    except SuiteError as exc:
        print(f"proxysuite: {exc}", file=sys.stderr)
        sys.exit(2)
