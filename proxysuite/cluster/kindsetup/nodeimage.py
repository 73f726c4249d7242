"""``proxysuite kind build-node-image``: a kind node image for the pinned Kubernetes, with no registry.

Everything comes from Debian packages and Go modules, so it builds on an air-gapped machine that has a Debian
mirror and a Go module proxy:

1. **Root filesystems** (:mod:`.rootfs`, ``debootstrap`` bookworm): the node (systemd, Debian's containerd 1.6,
   runc, CNI plugins, iptables, nftables, conntrack, jq, ...) and a small one for kube-proxy's image.
2. **kind's base files** from the ``sigs.k8s.io/kind`` module (``images/base/files``: entrypoint, ``/kind/bin``,
   systemd units, containerd config), laid over the node rootfs with the base Dockerfile's steps repeated in a
   chroot; Debian's binaries are linked where kind expects its own.
3. **Kubernetes binaries** built from ``clusters/local/go.mod``'s pins with version ldflags: kubelet, kubeadm,
   kubectl (here) and kube-apiserver, -controller-manager, -scheduler, -proxy, etcd (the local provider's
   cache, :mod:`proxysuite.cluster.local.components`); CoreDNS from ``github.com/coredns/coredns``; pause from
   ``clusters/kind-node/pause``.
4. **Component images** under the names kubeadm and kind's containerd config use
   (``registry.k8s.io/kube-apiserver:v1.37.2``, ``etcd:<kubeadm's version>``, ``coredns/coredns:<...>``,
   ``pause`` under kubeadm's and kind's tags), each a ``docker import`` of a one-binary rootfs (kube-proxy's on
   the small Debian rootfs), preloaded the way ``kind build node-image`` does: a build container starts
   containerd, ``ctr images import --no-unpack`` of a ``docker save`` of them, ``docker commit``.
5. **Host safety and this machine's limits**, in the image: ``systemd-sysctl`` masked and kubelet's kernel
   settings shielded (``clusters/kind-node/proxysuite-shield.sh``, run by the entrypoint); containerd's
   ``restrict_oom_score_adj = true`` (nothing may lower oom_score_adj without CAP_SYS_RESOURCE).
6. **Pod network**: kindnetd is not available offline; ``/kind/manifests/default-cni.yaml`` installs
   ``clusters/kind-node/cni.sh`` as a DaemonSet (ptp + host-local, routes between nodes' pod CIDRs).

The image is tagged ``proxysuite/kind-node:<k8s version>-<content hash>`` (every input above goes into the
hash) and labelled ``proxysuite.io/built-by=proxysuite``; a second run with the same inputs does nothing.
kubelet also needs ``failCgroupV1: false`` on cgroup v1 machines: that is cluster configuration, see
:func:`kind_config_patches`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ...config import default_cache_root
from ...errors import SuiteError
from ..local import components
from . import engine, rootfs

Progress = Callable[[str], None]
IMAGE_REPO = "proxysuite/kind-node"
FORMAT = "1"
"""Bumped when the image's layout changes in a way the hashed inputs do not show."""
KUBE_BINARIES = {"kubelet": "k8s.io/kubernetes/cmd/kubelet", "kubeadm": "k8s.io/kubernetes/cmd/kubeadm",
                 "kubectl": "k8s.io/kubernetes/cmd/kubectl"}
SERVER_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
KIND_LINKS = {  # where kind's base image puts its own builds -> Debian's packaged binaries
    "usr/local/bin/containerd": "/usr/bin/containerd",
    "usr/local/bin/ctr": "/usr/bin/ctr",
    "usr/local/bin/containerd-shim-runc-v2": "/usr/bin/containerd-shim-runc-v2",
    "usr/local/sbin/runc": "/usr/sbin/runc",
}
CNI_PLUGINS = ("ptp", "host-local", "loopback", "portmap", "bridge")
CLIENT_LABEL = "proxysuite.io/client-image"
BACKEND_LABEL = "proxysuite.io/backend-image"
IMPORT_TIMEOUT = 900
"""Seconds for containerd in the build container to import every component image (about 300 MB)."""


def _nice(argv: list[str]) -> list[str]:
    return ["nice", "-n", "10", *argv]


def _sh(argv: list[str], what: str, *, cwd: Path | None = None, env: dict | None = None, input: bytes | None = None,
        timeout: float | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, input=input, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.decode(errors="replace").strip().splitlines()[-10:])
        raise SuiteError(f"{what} failed:\n{tail}", "see the message above; rerun with the same command once fixed (finished steps are cached)")
    return proc.stdout.decode(errors="replace")


def _sha_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# --- inputs ---------------------------------------------------------------------------------------

def go_module_dir(module: str, version: str, progress: Progress) -> Path:
    """The module's directory in the Go module cache, downloaded if needed."""
    out = _sh(["go", "mod", "download", "-json", f"{module}@{version}"], f"go mod download {module}@{version}",
              cwd=Path(tempfile.gettempdir()), env={**os.environ, "GOFLAGS": "-mod=mod"})
    return Path(json.loads(out)["Dir"])


def kubeadm_image_versions(k8s_dir: Path) -> dict[str, str]:
    """etcd, CoreDNS and pause versions kubeadm of this Kubernetes asks for (its constants.go)."""
    text = (k8s_dir / "cmd/kubeadm/app/constants/constants.go").read_text()
    found = {}
    for key, name in (("etcd", "DefaultEtcdVersion"), ("coredns", "CoreDNSVersion"), ("pause", "PauseVersion")):
        m = re.search(rf'\b{name}\s*=\s*"([^"]+)"', text)
        if not m:
            raise SuiteError(f"kubeadm's {name} not found in {k8s_dir}", "the pinned Kubernetes changed kubeadm's constants: update nodeimage.py")
        found[key] = m.group(1)
    return found


def kind_sandbox_image(kind_dir: Path) -> str:
    m = re.search(r'sandbox_image\s*=\s*"([^"]+)"', (kind_dir / "images/base/files/etc/containerd/config.toml").read_text())
    return m.group(1) if m else "registry.k8s.io/pause:3.10"


def kube_binaries(pins: components.Pins, progress: Progress) -> dict[str, Path]:
    """kubelet, kubeadm, kubectl from the local provider's pins, built like its components (version ldflags)."""
    out = default_cache_root() / "kind-node" / "bin" / f"{pins.kubernetes}-{pins.digest}"
    paths = {n: out / n for n in KUBE_BINARIES}
    todo = [n for n, p in paths.items() if not p.exists()]
    if not todo:
        return paths
    # A copy of the pinned module: these commands need modules the local components do not, and go.sum
    # must grow without touching the checkout.
    gomod = default_cache_root() / "kind-node" / f"gomod-{pins.digest}"
    gomod.mkdir(parents=True, exist_ok=True)
    for f in ("go.mod", "go.sum"):
        if not (gomod / f).exists():
            shutil.copy(components.module_dir() / f, gomod / f)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    progress(f"building {', '.join(todo)} {pins.kubernetes} (cold: several minutes each on 2 cores; cached in {out})")
    for i, name in enumerate(todo, 1):
        started = time.monotonic()
        progress(f"  [{i}/{len(todo)}] go build {KUBE_BINARIES[name]} ...")
        tmp = out / f".{name}.tmp"
        _sh(_nice(["go", "build", "-trimpath", "-ldflags", components._ldflags(pins.kubernetes), "-o", str(tmp),
                   KUBE_BINARIES[name]]), f"building {name}", cwd=gomod, env=env)
        tmp.rename(paths[name])
        progress(f"  [{i}/{len(todo)}] {name} built in {time.monotonic() - started:.0f}s")
    return paths


def coredns_binary(version: str, progress: Progress) -> Path:
    out = default_cache_root() / "kind-node" / "bin" / f"coredns-{version}"
    if (out / "coredns").exists():
        return out / "coredns"
    out.mkdir(parents=True, exist_ok=True)
    progress(f"building CoreDNS {version} from its Go module (a few minutes cold) ...")
    started = time.monotonic()
    _sh(_nice(["go", "install", "-trimpath", "-ldflags", "-s -w", f"github.com/coredns/coredns@{version}"]),
        f"building CoreDNS {version}", cwd=out, env={**os.environ, "GOBIN": str(out), "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"})
    progress(f"CoreDNS built in {time.monotonic() - started:.0f}s")
    return out / "coredns"


# --- images ---------------------------------------------------------------------------------------

class Builder:
    """One build: the engine it talks to, the inputs, a scratch directory."""

    def __init__(self, docker_host: str, progress: Progress):
        self.host = docker_host
        self.progress = progress
        self.scratch = Path(tempfile.mkdtemp(prefix="proxysuite-nodeimage-", dir=str(default_cache_root() / "kind-node")))

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 1800, what: str | None = None,
               env: dict | None = None) -> str:
        return _sh(["docker", "-H", self.host, *args], what or f"docker {' '.join(args[:2])}", input=input,
                   timeout=timeout, env=env)

    def has_image(self, ref: str) -> bool:
        return subprocess.run(["docker", "-H", self.host, "image", "inspect", ref], capture_output=True).returncode == 0

    def import_tar(self, tar: Path | bytes, ref: str, changes: list[str]) -> None:
        args = ["import"]
        for c in changes + [f"LABEL {engine.BUILT_LABEL}"]:
            args += ["--change", c]
        if isinstance(tar, Path):
            self.docker(*args, str(tar), ref, what=f"docker import {ref}")
        else:
            self.docker(*args, "-", ref, input=tar, what=f"docker import {ref}")

    def build_from(self, base: str, ref: str, dockerfile_lines: list[str], files: dict[str, Path]) -> None:
        """``FROM base`` plus lines with the legacy builder (no registry, and STOPSIGNAL works on 20.10)."""
        ctx = Path(tempfile.mkdtemp(dir=self.scratch))
        for name, src in files.items():
            shutil.copy2(src, ctx / name)
        (ctx / "Dockerfile").write_text("\n".join([f"FROM {base}", *dockerfile_lines, f"LABEL {engine.BUILT_LABEL}"]) + "\n")
        self.docker("build", "-q", "-t", ref, str(ctx), what=f"docker build {ref}", env={**os.environ, "DOCKER_BUILDKIT": "0"})
        shutil.rmtree(ctx, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def test_images(key: str) -> dict[str, str]:
    """The suite's own workload images in this node image: python3 clients and agnhost backends."""
    return {"client": f"proxysuite.local/client:{key}", "backend": f"proxysuite.local/agnhost:{key}"}


def component_images(b: Builder, pins: components.Pins, versions: dict[str, str], sandbox: str, key: str,
                     bins: dict[str, Path], proxy_rootfs: Path, client_rootfs: Path, pause: Path, coredns: Path) -> list[str]:
    """Import every image kubeadm, the CNI and the suite's workloads need; returns their references."""
    v = pins.kubernetes
    refs: list[str] = []
    path_env = "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"
    for name in SERVER_COMPONENTS:
        ref = f"registry.k8s.io/{name}:{v}"
        b.progress(f"image {ref}")
        b.import_tar(engine.single_binary_tar({f"usr/local/bin/{name}": bins[name]}, ("tmp", "usr", "usr/local", "usr/local/bin", "etc")),
                     ref, [path_env])
        refs.append(ref)
    ref = f"registry.k8s.io/etcd:{versions['etcd']}"
    b.progress(f"image {ref}")
    b.import_tar(engine.single_binary_tar({"usr/local/bin/etcd": bins["etcd"]}, ("tmp", "usr", "usr/local", "usr/local/bin", "var", "var/lib")),
                 ref, [path_env])
    refs.append(ref)
    ref = f"registry.k8s.io/coredns/coredns:{versions['coredns']}"
    b.progress(f"image {ref}")
    b.import_tar(engine.single_binary_tar({"coredns": coredns}, ("tmp", "etc")), ref, ['ENTRYPOINT ["/coredns"]'])
    refs.append(ref)
    pause_refs = sorted({f"registry.k8s.io/pause:{versions['pause']}", sandbox})
    b.progress(f"image {', '.join(pause_refs)}")
    b.import_tar(engine.single_binary_tar({"pause": pause}, ()), pause_refs[0], ['ENTRYPOINT ["/pause"]'])
    for extra in pause_refs[1:]:
        b.docker("tag", pause_refs[0], extra)
    refs += pause_refs
    base = f"proxysuite/kind-proxy-base:{key}"
    if not b.has_image(base):
        b.progress(f"importing the kube-proxy rootfs ({proxy_rootfs.stat().st_size >> 20} MiB)")
        b.import_tar(proxy_rootfs, base, [path_env])
    ref = f"registry.k8s.io/kube-proxy:{v}"
    b.progress(f"image {ref}")
    b.build_from(base, ref, ["COPY kube-proxy /usr/local/bin/kube-proxy"], {"kube-proxy": bins["kube-proxy"]})
    refs.append(ref)
    ref = cni_image(key)
    b.progress(f"image {ref} (pod network: clusters/kind-node/cni.sh)")
    b.build_from(base, ref, ["COPY kubectl proxysuite-cni /usr/local/bin/"],
                 {"kubectl": bins["kubectl"], "proxysuite-cni": engine.node_source_dir() / "cni.sh"})
    refs.append(ref)
    tests = test_images(key)
    b.progress(f"image {tests['backend']} (agnhost, built with the local provider's components)")
    b.import_tar(engine.single_binary_tar({"agnhost": bins["agnhost"]}, ("tmp", "etc")), tests["backend"], ['ENTRYPOINT ["/agnhost"]'])
    refs.append(tests["backend"])
    if not b.has_image(tests["client"]):
        b.progress(f"image {tests['client']} (python3 for the probe engine; {client_rootfs.stat().st_size >> 20} MiB)")
        b.import_tar(client_rootfs, tests["client"], [path_env])
    refs.append(tests["client"])
    return refs


def cni_image(key: str) -> str:
    return f"proxysuite.local/cni:{key}"


def prepare_node_rootfs(tree: Path, kind_dir: Path, bins: dict[str, Path], cni_ref: str, progress: Progress,
                        k8s_version: str = "") -> None:
    """kind's base files and the base Dockerfile's steps, on an unpacked node rootfs (chroot, no network)."""
    files = kind_dir / "images/base/files"
    for src in files.rglob("*"):
        if src.is_file():
            rel = src.relative_to(files)
            if rel.parts[0] == "LICENSES":
                continue
            dst = tree / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            exe = rel.parts[:2] in (("usr", "local"), ("kind", "bin"))
            dst.chmod(0o755 if exe else 0o644)
    (tree / "kind").chmod(0o755)
    (tree / "kind/bin").chmod(0o755)
    node = engine.node_source_dir()
    shutil.copyfile(node / "proxysuite-shield.sh", tree / "kind/bin/proxysuite-shield.sh")
    (tree / "kind/bin/proxysuite-shield.sh").chmod(0o755)
    entry = tree / "usr/local/bin/entrypoint"
    text = entry.read_text()
    if '\nexec "$@"' not in text:
        raise SuiteError("kind's entrypoint no longer ends with exec \"$@\"", "update nodeimage.py for this kind version")
    entry.write_text(text.replace('\nexec "$@"', '\n/kind/bin/proxysuite-shield.sh\nexec "$@"', 1))
    # kind reads the node's Kubernetes version here to pick its kubeadm config templates.
    (tree / "kind/version").write_text(k8s_version + "\n")
    (tree / "kind/manifests").mkdir(parents=True, exist_ok=True)
    (tree / "kind/manifests/default-cni.yaml").write_text((node / "default-cni.yaml").read_text().replace("@CNI_IMAGE@", cni_ref))
    # containerd: this machine cannot lower oom_score_adj (no CAP_SYS_RESOURCE), so restrict it to raising.
    toml = tree / "etc/containerd/config.toml"
    toml.write_text(toml.read_text().replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true"))
    for link_rel, points_to in KIND_LINKS.items():
        link = tree / link_rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(points_to)
    # Privileged pods (kube-proxy) ask the node's runc for every capability; the node's bounding set lacks
    # what the machine's lacks. The same wrapper as the engine's sits where kind puts runc (first on PATH).
    wrapper = tree / "usr/local/sbin/runc"
    wrapper.unlink()
    wrapper.write_text((Path(engine.__file__).with_name("runc-wrapper.sh")).read_text().replace("@REAL_RUNC@", "/usr/sbin/runc"))
    wrapper.chmod(0o755)
    (tree / "opt/cni/bin").mkdir(parents=True, exist_ok=True)
    for p in CNI_PLUGINS:
        link = tree / "opt/cni/bin" / p
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/lib/cni/{p}")
    for name, path in bins.items():
        shutil.copy2(path, tree / "usr/bin" / name)
    # The base Dockerfile's clean-up: no units but the ones kind enables, no udev, kmsg not read.
    for pattern in ("lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service",
                    "lib/systemd/system/multi-user.target.wants/*", "etc/systemd/system/*.wants/*",
                    "lib/systemd/system/local-fs.target.wants/*", "lib/systemd/system/sockets.target.wants/*udev*",
                    "lib/systemd/system/sockets.target.wants/*initctl*", "lib/systemd/system/basic.target.wants/*"):
        for f in tree.glob(pattern):
            if f.is_symlink() or f.is_file():
                f.unlink()
    with open(tree / "etc/systemd/journald.conf", "a") as fh:
        fh.write("ReadKMsg=no\n")
    (tree / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
    chroot = ["chroot", str(tree)]
    _sh(chroot + ["systemctl", "enable", "kubelet.service", "containerd.service", "undo-mount-hacks.service"], "systemctl enable")
    # systemd-sysctl would apply Debian's kernel.*/fs.* defaults to the machine (see proxysuite-shield.sh).
    _sh(chroot + ["systemctl", "mask", "systemd-binfmt.service", "systemd-sysctl.service"], "systemctl mask")
    spec = _sh(chroot + ["ctr", "oci", "spec"], "ctr oci spec")
    doc = json.loads(spec)
    doc.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
    doc["process"].pop("rlimits", None)
    (tree / "etc/containerd/cri-base.json").write_text(json.dumps(doc, indent=1))


def node_image_ref(pins: components.Pins, key: str) -> str:
    return f"{IMAGE_REPO}:{pins.kubernetes}-{key}"


def build(progress: Progress = print, docker_host: str | None = None) -> str:
    """Build (or find) the node image; returns its reference. See the module docstring."""
    started = time.monotonic()
    host = docker_host or os.environ.get("DOCKER_HOST") or engine.adopt() or f"unix://{engine.DEFAULT_SOCKET}"
    if not engine.server_version(host):
        raise SuiteError(f"no Docker engine answers on {host}", "run `proxysuite kind setup-engine` first (or set DOCKER_HOST)")
    pins = components.read_pins()
    kind_dir = go_module_dir(engine.KIND_MODULE, engine.KIND_VERSION, progress)
    k8s_dir = go_module_dir("k8s.io/kubernetes", pins.kubernetes, progress)
    versions = kubeadm_image_versions(k8s_dir)
    sandbox = kind_sandbox_image(kind_dir)

    rootfs.ensure_debootstrap(progress)  # here, not 20 minutes of Go builds later in the thread
    # debootstrap waits on the mirror and the disk, the Go builds on the CPU: run them side by side.
    with ThreadPoolExecutor(max_workers=1) as pool:
        trees = pool.submit(lambda: [rootfs.build(name, packages, progress) for name, packages in
                                     (("node", rootfs.NODE_PACKAGES), ("proxy", rootfs.PROXY_PACKAGES),
                                      ("client", rootfs.CLIENT_PACKAGES))])
        kube = kube_binaries(pins, progress)
        comps = components.ensure(pins.kubernetes, progress=progress)
        coredns = coredns_binary(versions["coredns"], progress)
        pause = engine.pause_binary(progress)
        node_tar, proxy_tar, client_tar = trees.result()

    node = engine.node_source_dir()
    inputs = [node_tar, proxy_tar, client_tar, *kube.values(),
              *(comps[n] for n in (*SERVER_COMPONENTS, "kube-proxy", "etcd", "agnhost")), coredns, pause,
              node / "proxysuite-shield.sh", node / "cni.sh", node / "default-cni.yaml", Path(__file__),
              Path(engine.__file__).with_name("runc-wrapper.sh"),
              *sorted(p for p in (kind_dir / "images/base/files").rglob("*") if p.is_file())]
    progress(f"hashing {len(inputs)} inputs ...")
    key = hashlib.sha256(f"{FORMAT}\n{versions}\n{sandbox}\n{_sha_files(inputs)}".encode()).hexdigest()[:12]
    ref = node_image_ref(pins, key)
    b = Builder(host, progress)
    try:
        if b.has_image(ref):
            progress(f"node image {ref} is up to date")
            return ref
        bins = {**comps, **kube}
        refs = component_images(b, pins, versions, sandbox, key, bins, proxy_tar, client_tar, pause, coredns)

        progress(f"unpacking the node rootfs ({node_tar.stat().st_size >> 20} MiB) and laying kind {engine.KIND_VERSION}'s base files over it")
        tree = b.scratch / "rootfs"
        tree.mkdir()
        _sh(_nice(["tar", "--numeric-owner", "-xf", str(node_tar), "-C", str(tree)]), "unpacking the node rootfs")
        prepare_node_rootfs(tree, kind_dir, {n: kube[n] for n in KUBE_BINARIES}, cni_image(key), progress, pins.kubernetes)
        base = f"proxysuite/kind-node-base:{key}"
        progress(f"importing the node rootfs as {base}")
        tar = b.scratch / "node.tar"
        _sh(_nice(["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-cf", str(tar), "."]), "packing the node rootfs")
        shutil.rmtree(tree)
        b.import_tar(tar, base, ["ENV container=docker", 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]'])
        tar.unlink()

        progress(f"preloading {len(refs)} images into the node's containerd (as kind build node-image does)")
        images_tar = b.scratch / "images.tar"
        b.docker("save", "-o", str(images_tar), *refs, what="docker save")
        name = f"proxysuite-nodeimage-{key}"
        b.docker("rm", "-f", name, what="docker rm")
        b.docker("run", "-d", "--name", name, "--privileged", "--label", engine.BUILT_LABEL, "--network", "none",
                 "--entrypoint", "sleep", base, "infinity", what="starting the build container")
        try:
            b.docker("cp", str(images_tar), f"{name}:/images.tar", what="docker cp images.tar")
            images_tar.unlink()
            b.docker("exec", name, "bash", "-c", "nohup containerd >/var/log/containerd-build.log 2>&1 &")
            b.docker("exec", name, "bash", "-c", "for i in $(seq 1 60); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1",
                     what="waiting for containerd in the build container")
            b.docker("exec", name, "ctr", "--namespace=k8s.io", "images", "import", "--label=io.cri-containerd.pinned=pinned",
                     "--all-platforms", "--no-unpack", "--digests", "/images.tar", timeout=IMPORT_TIMEOUT, what="ctr images import")
            listed = b.docker("exec", name, "ctr", "--namespace=k8s.io", "images", "list", "-q")
            missing = [r for r in refs if r not in listed.split()]
            if missing:
                raise SuiteError(f"containerd in the build container lacks {', '.join(missing)} after the import", "see `ctr images list` in the build container")
            b.docker("exec", name, "bash", "-c", "pkill containerd; for i in $(seq 1 30); do pgrep -x containerd >/dev/null || break; sleep 1; done; "
                     "rm -f /images.tar /var/log/containerd-build.log")
            committed = f"proxysuite/kind-node-preloaded:{key}"
            b.docker("commit", "--change", 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]', "--change", "CMD []", name, committed,
                     what="docker commit")
        finally:
            b.docker("rm", "-f", name, what="removing the build container")
        # STOPSIGNAL cannot be given to import/commit on engine 20.10; a one-line build can.
        tests = test_images(key)
        b.build_from(committed, ref, ["STOPSIGNAL SIGRTMIN+3", f"LABEL {CLIENT_LABEL}={tests['client']} {BACKEND_LABEL}={tests['backend']}"], {})
        for tmp_ref in (committed, base):
            subprocess.run(["docker", "-H", host, "rmi", tmp_ref], capture_output=True)
        progress(f"node image {ref} built in {time.monotonic() - started:.0f}s")
        _remove_superseded(host, key, progress)
        return ref
    finally:
        b.close()


def _remove_superseded(host: str, key: str, progress: Progress) -> None:
    """Images of earlier builds (other content hashes); one still used by a container stays."""
    out = subprocess.run(["docker", "-H", host, "images", "--filter", f"label={engine.BUILT_LABEL}", "--format",
                          "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True).stdout.split()
    ours = (IMAGE_REPO, "proxysuite/kind-proxy-base", "proxysuite.local/cni", "proxysuite.local/client", "proxysuite.local/agnhost")
    old = [r for r in out if r.rsplit(":", 1)[0] in ours and not r.endswith(key)]
    removed = [r for r in old if subprocess.run(["docker", "-H", host, "rmi", r], capture_output=True).returncode == 0]
    if removed:
        progress(f"removed {len(removed)} image(s) of earlier builds")


def kind_config_patches() -> dict:
    """What a kind Cluster needs to run this image on a cgroup v1 machine (merged into the rendered config)."""
    return {"kubeadmConfigPatches": ["kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\nfailCgroupV1: false\n"]}
