"""The pinned offline Cilium build (proxysuite/cluster/kindsetup/cilium.py) and what its chart would install.

The chart is rendered for real with the Helm built from the pinned module and the suite's values, and checked
for every piece docs/cilium.md lists as able to touch the machine. The rendering tests need the cached build
(``python -m proxysuite.cluster.kindsetup.cilium``, ~11 min cold on 2 cores) and skip, saying so, without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from proxysuite.cluster import kind
from proxysuite.cluster.kindsetup import cilium, engine

HOST_CAPS = {"SYS_MODULE", "SYS_RESOURCE"}


def test_pins_name_the_modules_and_helm_targets_the_pinned_kubernetes():
    pins = cilium.read_pins()
    assert (pins.cilium, pins.helm) == ("v1.20.2", "v3.22.0")
    # Helm's default capabilities (and lint) say Kubernetes 1.<client-go minor>: 1.37, the suite's version.
    assert pins.helm_client_go.startswith("v0.37.")
    assert "k8sVersionMinor=37" in cilium.ldflags("helm", pins)
    assert "ciliumVersion=1.20.2 v1.20.2" in cilium.ldflags("cilium-agent", pins)


def test_cache_key_follows_every_file_of_both_modules(tmp_path, monkeypatch):
    dirs = {}
    for name, src in cilium.module_dirs().items():
        dirs[name] = tmp_path / name
        shutil.copytree(src, dirs[name])
    base = cilium.read_pins(dirs).digest
    assert base == cilium.read_pins(dirs).digest
    (dirs["cilium"] / "mcsapi-controllers" / "controllers.go").write_text("package controllers\n")
    assert cilium.read_pins(dirs).digest != base  # the stand-in module a replace points at is part of the build


def test_missing_module_is_one_line_naming_the_fix(tmp_path):
    from proxysuite.errors import SuiteError

    with pytest.raises(SuiteError, match="is missing"):
        cilium.read_pins({"cilium": tmp_path, "helm": tmp_path})


@pytest.fixture(scope="module")
def built():
    pins = cilium.read_pins()
    out = cilium.bin_dir(pins)
    if not (out / "manifest.json").exists() or not shutil.which("go"):
        pytest.skip(f"Cilium {pins.cilium} is not built here yet: run `python -m proxysuite.cluster.kindsetup.cilium` (~11 min on 2 cores)")
    return cilium.ensure(progress=lambda m: None)


def test_binaries_report_the_pinned_versions(built):
    agent = subprocess.run([str(built["cilium-agent"]), "--version"], capture_output=True, text=True, timeout=60)
    assert agent.stdout.startswith("cilium-agent 1.20.2 "), agent.stdout + agent.stderr
    helm = subprocess.run([str(built["helm"]), "version", "--short"], capture_output=True, text=True, timeout=60)
    assert helm.stdout.startswith("v3.22.0"), helm.stdout + helm.stderr


def test_module_holds_the_bpf_sources_and_the_chart_of_that_version(built):
    src = cilium.source_dir(progress=lambda m: None)
    assert (src / "bpf" / "bpf_lxc.c").is_file() and (src / "bpf" / "bpf_sock.c").is_file()
    chart = yaml.safe_load((cilium.chart_dir(progress=lambda m: None) / "Chart.yaml").read_text())
    assert chart["version"] == cilium.read_pins().cilium.lstrip("v")


REFS = {"agent": "proxysuite/cilium:v0-test", "operator": "proxysuite/cilium-operator-generic:v0-test"}


def render(built, variant: str) -> list[dict]:
    argv = [str(built["helm"]), "template", "cilium", str(cilium.chart_dir(progress=lambda m: None)), "--namespace", "kube-system",
            "--kube-version", "1.37.2", "--set", "k8sServiceHost=ps-control-plane", "--set", "k8sServicePort=6443",
            *cilium.helm_image_args(REFS)]
    for f in kind.cilium_values_files(variant):
        argv += ["--values", str(f)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, "HELM_CACHE_HOME": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("variant", kind.CILIUM_VARIANTS)
def test_chart_with_suite_values_leaves_the_machine_alone(built, variant):
    docs = render(built, variant)
    workloads = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("DaemonSet", "Deployment")}
    assert set(workloads) == {"cilium", "cilium-operator"}  # no cilium-envoy
    agent = workloads["cilium"]
    containers = {c["name"]: c for c in agent["initContainers"] + agent["containers"]}
    assert "apply-sysctl-overwrites" not in containers  # it would restart systemd-sysctl on the node
    # Only mount-bpf-fs is privileged: it mounts a bpffs inside the node's mount namespace.
    assert {n for n, c in containers.items() if c.get("securityContext", {}).get("privileged")} == {"mount-bpf-fs"}
    for name, c in containers.items():
        assert not HOST_CAPS & set(c.get("securityContext", {}).get("capabilities", {}).get("add") or []), name
    # mount-cgroup enters PID 1's namespaces as seen through the node's own /proc: the node's systemd, not the machine's.
    hostpaths = {v["name"]: v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v}
    assert hostpaths["hostproc"] == "/proc" and "/hostproc/1/ns/mnt" in containers["mount-cgroup"]["command"][-1]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cilium-config")["data"]
    # Unprivileged, the agent writes sysctls only under /host/proc: the node's /proc/sys/{net,kernel} (shielded).
    assert config["procfs"] == "/host/proc"
    assert hostpaths["host-proc-sys-kernel"] == "/proc/sys/kernel"
    assert (config["kube-proxy-replacement"], config["enable-l7-proxy"]) == ("true", "false")
    # Offline: every container runs one of the two imported images and never asks a registry.
    pods = list(workloads.values())
    images = {(c["image"], c["imagePullPolicy"]) for s in pods for c in s.get("initContainers", []) + s["containers"]}
    assert images == {(REFS["agent"], "Never"), (REFS["operator"], "Never")}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_node_shield_covers_the_kernel_settings_the_agent_writes(tmp_path):
    # Checked by the mount, never by writing: a failed shield would change the machine until reboot
    # (kernel.unprivileged_bpf_disabled=1 cannot be undone).
    keys = ("kernel/unprivileged_bpf_disabled", "kernel/timer_migration")
    shield = engine.node_source_dir() / "proxysuite-shield.sh"
    proc = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "bash", "-c",
                           f"{shield} && for k in {' '.join(keys)}; do findmnt -n -o TARGET /proc/sys/$k; done"],
                          env={**os.environ, "PROXYSUITE_SHIELD_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"/proc/sys/{k}" for k in keys]


def test_agent_overlay_puts_each_file_where_the_chart_and_agent_look(built, tmp_path):
    import tarfile

    src = cilium.source_dir(progress=lambda m: None)
    with tarfile.open(cilium.agent_overlay(tmp_path / "o.tar", built, src)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    # daemonset.yaml: cp /usr/bin/cilium-mount, /usr/bin/cilium-sysctlfix; command /init-container.sh, /install-plugin.sh
    for name in ("usr/bin/cilium-agent", "usr/bin/cilium-dbg", "usr/bin/cilium-mount", "init-container.sh",
                 "install-plugin.sh", "opt/cni/bin/cilium-cni"):
        assert members[name].mode & 0o111, name
    assert members["usr/local/bin/clang"].linkname == "/usr/bin/clang-19"
    assert "var/lib/cilium/bpf/bpf_lxc.c" in members and "var/lib/cilium/bpf/include/bpf/ctx/skb.h" in members
    assert not any(n.startswith("var/lib/cilium/bpf/tests/") for n in members)  # Makefile.defs leaves tests out


def test_the_release_the_suite_names_is_the_one_it_builds():
    from proxysuite import images

    assert f"v{images.CILIUM_CHART_VERSION}" == cilium.read_pins().cilium


def test_cilium_source_is_offline_unless_told_and_a_bad_value_names_the_choices(monkeypatch):
    from proxysuite.errors import SuiteError

    monkeypatch.delenv(kind.CILIUM_SOURCE_ENV, raising=False)
    assert kind.cilium_source() == "offline"
    monkeypatch.setenv(kind.CILIUM_SOURCE_ENV, "quay")
    with pytest.raises(SuiteError, match="offline, repo"):
        kind.cilium_source()


def test_repo_source_installs_the_pinned_chart_version_from_the_repository(monkeypatch):
    from proxysuite import images
    from proxysuite.config import SuiteConfig

    monkeypatch.setenv(kind.CILIUM_SOURCE_ENV, "repo")
    monkeypatch.delenv("PROXYSUITE_CILIUM_VERSION", raising=False)
    argv = kind.cilium_helm_argv(SuiteConfig(provider="kind", mode="cilium", cluster_name="c1"), "/k", lambda m: None)
    assert argv[:2] == ["helm", "upgrade"] and argv[argv.index("--version") + 1] == images.CILIUM_CHART_VERSION
    assert "k8sServiceHost=c1-control-plane" in argv and "image.pullPolicy=Never" not in argv
