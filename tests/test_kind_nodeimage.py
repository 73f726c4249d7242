"""The offline kind node image: what goes in, and that nothing in it can change the machine's kernel settings.

Fast tests run the image's shield script for real in a throwaway mount + network namespace. Building the image
is heavy (debootstrap, Kubernetes builds; tens of minutes cold, under a minute warm): opt in with
``PROXYSUITE_TEST_KIND_IMAGE=1`` (needs root and a Docker engine, e.g. ``proxysuite kind setup-engine``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from proxysuite.cluster.kindsetup import engine, hostcheck, nodeimage, rootfs

SHIELD = engine.node_source_dir() / "proxysuite-shield.sh"
KUBELET_WANTS = {"kernel.panic": "10", "kernel.panic_on_oops": "1", "vm.overcommit_memory": "1"}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_shield_gives_kubelet_its_values_in_the_node_and_leaves_the_machine_alone(tmp_path):
    before = hostcheck.HostSnapshot.take()
    # The node's view: a private mount namespace (bind mounts stay there) and a network namespace (the
    # script also applies /etc/sysctl.d's net.* keys, which must not land in the root namespace here).
    reads = " ".join(f"$(cat /proc/sys/{k.replace('.', '/')})" for k in KUBELET_WANTS)
    proc = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "bash", "-c",
                           f"{SHIELD} && echo {reads} && echo 1 > /proc/sys/kernel/panic_on_oops && cat /proc/sys/kernel/panic_on_oops"],
                          env={**os.environ, "PROXYSUITE_SHIELD_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    inside, written = proc.stdout.split("\n")[:2]
    assert inside.split() == list(KUBELET_WANTS.values())
    assert written == "1"  # a write kubelet would make lands in the shield file ...
    assert before.changes(hostcheck.HostSnapshot.take()) == []  # ... and the machine keeps its own values


def test_cache_key_follows_the_package_list_and_mirror():
    a = rootfs.cache_key(rootfs.NODE_PACKAGES, "http://m/debian")
    assert a == rootfs.cache_key(tuple(reversed(rootfs.NODE_PACKAGES)), "http://m/debian")
    assert a != rootfs.cache_key(rootfs.NODE_PACKAGES + ("vim",), "http://m/debian")
    assert a != rootfs.cache_key(rootfs.NODE_PACKAGES, "http://other/debian")


@pytest.mark.skipif(not shutil.which("go"), reason="needs Go (reads the pinned modules from the module cache)")
def test_image_names_come_from_the_pinned_kubeadm_and_kind():
    from proxysuite.cluster.local import components

    pins = components.read_pins()
    k8s = nodeimage.go_module_dir("k8s.io/kubernetes", pins.kubernetes, print)
    versions = nodeimage.kubeadm_image_versions(k8s)
    assert set(versions) == {"etcd", "coredns", "pause"} and all(v[0].isdigit() or v[0] == "v" for v in versions.values())
    kind_dir = nodeimage.go_module_dir(engine.KIND_MODULE, engine.KIND_VERSION, print)
    assert nodeimage.kind_sandbox_image(kind_dir).startswith("registry.k8s.io/pause:")
    entry = (kind_dir / "images/base/files/usr/local/bin/entrypoint").read_text()
    assert '\nexec "$@"' in entry  # where the shield is hooked in


@pytest.mark.skipif(os.environ.get("PROXYSUITE_TEST_KIND_IMAGE") != "1",
                    reason="builds the offline node image (heavy): opt in with PROXYSUITE_TEST_KIND_IMAGE=1")
def test_node_image_boots_with_its_images_preloaded_and_the_machine_unchanged():
    host = engine.adopt() or os.environ.get("DOCKER_HOST") or f"unix://{engine.DEFAULT_SOCKET}"
    ref = nodeimage.build(print, docker_host=host)
    labels = subprocess.run(["docker", "-H", host, "image", "inspect", "--format", "{{json .Config.Labels}}", ref],
                            capture_output=True, text=True, check=True).stdout
    assert nodeimage.CLIENT_LABEL in labels and engine.BUILT_LABEL.split("=")[0] in labels
    before = hostcheck.HostSnapshot.take()
    name = f"ps-nodeimage-test-{os.getpid()}"
    try:
        subprocess.run(["docker", "-H", host, "run", "-d", "--name", name, "--privileged", "--security-opt", "seccomp=unconfined",
                        "--tmpfs", "/tmp", "--tmpfs", "/run", "--volume", "/var", "--cgroupns=private", "--network", "none",
                        "--label", engine.BUILT_LABEL, ref], check=True, capture_output=True)

        def node(*argv: str) -> str:
            return subprocess.run(["docker", "-H", host, "exec", name, *argv], capture_output=True, text=True).stdout

        from tests.support import wait_for

        wait_for("systemd running in the node", lambda: node("systemctl", "is-system-running").strip() in ("running", "degraded"), 120)
        assert node("systemctl", "is-active", "containerd").strip() == "active"
        assert node("systemctl", "is-enabled", "systemd-sysctl").strip() == "masked"
        listed = node("ctr", "-n", "k8s.io", "images", "list", "-q")
        for want in ("registry.k8s.io/kube-apiserver:", "registry.k8s.io/etcd:", "registry.k8s.io/coredns/coredns:",
                     "registry.k8s.io/pause:", "registry.k8s.io/kube-proxy:"):
            assert want in listed, want
        assert node("cat", "/proc/sys/kernel/panic").strip() == "10"
        # systemd raised fs.file-max in the node, not on the machine (the first boots did change it here).
        assert node("cat", "/proc/sys/fs/file-max").strip() == "9223372036854775807"
        node_id = subprocess.run(["docker", "-H", host, "inspect", "--format", "{{.Id}}", name],
                                 capture_output=True, text=True, check=True).stdout.strip()
        changes = before.changes(hostcheck.HostSnapshot.take(), inside=(node_id,))
        if changes:
            _restore(before)
        assert changes == []
        # ... and the node's own programs are seen (so the check after removal can fail): journald's sd_fw_*.
        assert any(" @" in ln and node_id in ln for ln in hostcheck.bpf_state().splitlines())
    finally:
        subprocess.run(["docker", "-H", host, "rm", "-f", "-v", name], capture_output=True)
    changes = before.changes(hostcheck.HostSnapshot.take())
    if changes:
        _restore(before)
    assert changes == []


@pytest.mark.skipif(os.environ.get("PROXYSUITE_TEST_KIND_IMAGE") != "1",
                    reason="builds the offline node image (heavy): opt in with PROXYSUITE_TEST_KIND_IMAGE=1")
def test_a_pinned_image_that_cannot_be_pulled_falls_back_to_the_offline_image(monkeypatch):
    """What a user with no registry gets from plain ``--provider kind``: the pull fails with its reason, then the
    offline image (an image named explicitly never falls back)."""
    from proxysuite.cluster.kindsetup import hooks

    host = engine.adopt() or os.environ.get("DOCKER_HOST") or f"unix://{engine.DEFAULT_SOCKET}"
    monkeypatch.setenv("DOCKER_HOST", host)
    missing = "kindest/node:v0.0.0-proxysuite-missing"
    assert not hooks.image_present(missing)
    said: list[str] = []
    ref = hooks.resolve_node_image(missing, said.append)
    assert ref == nodeimage.build(print, docker_host=host)
    assert any(m.startswith(f"cannot pull {missing} (") and "offline node image" in m for m in said), said
    assert hooks.resolve_node_image(missing, said.append, explicit=True) == missing


def _restore(before: hostcheck.HostSnapshot) -> None:
    """Put back any kernel setting a failing check found changed, before reporting it."""
    now = hostcheck.sysctls()
    for key, value in before.sysctls.items():
        if now.get(key) != value:
            subprocess.run(["sysctl", "-q", "-w", f"{key}={value}"], capture_output=True)
