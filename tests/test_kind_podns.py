"""Finding a kind pod's network namespace from this machine (the Locust load on kind enters it)."""

import os
import subprocess
import uuid

import pytest

from proxysuite.cluster.kindsetup import podns
from proxysuite.errors import SuiteError


def _proc(tmp_path, entries: dict[str, tuple[str, str]]):
    """A /proc listing: pid -> (cgroup text, the namespace file its ns/net points at)."""
    for pid, (cgroup, ns) in entries.items():
        (tmp_path / pid / "ns").mkdir(parents=True)
        (tmp_path / pid / "cgroup").write_text(cgroup)
        (tmp_path / pid / "ns" / "net").symlink_to(ns)
    return tmp_path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (creates a network namespace)")
def test_the_pods_own_namespace_is_found_by_either_cgroup_spelling(tmp_path):
    uid = str(uuid.uuid4())
    name = f"ps-podns-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        pod_ns, host_ns = f"/run/netns/{name}", "/proc/self/ns/net"
        systemd = f"0::/docker/abc/kubelet.slice/kubelet-kubepods-besteffort-pod{uid.replace('-', '_')}.slice/cri-containerd-1.scope\n"
        proc = _proc(tmp_path, {"self": ("", host_ns), "10": ("0::/user.slice\n", host_ns),
                                "11": (systemd.replace("cri-containerd-1", "hostnet"), host_ns),  # a hostNetwork sibling
                                "12": (systemd, pod_ns)})
        assert podns.pod_pids(uid, proc) == [11, 12]
        assert podns.pod_netns_path(uid, proc) == str(proc / "12" / "ns" / "net")
        cgroupfs = f"4:cpu:/docker/abc/kubepods/besteffort/pod{uid}/def\n"
        (proc / "12" / "cgroup").write_text(cgroupfs)
        assert podns.pod_netns_path(uid, proc) == str(proc / "12" / "ns" / "net")
        with pytest.raises(SuiteError, match="no process on this machine belongs to pod"):
            podns.pod_netns_path(str(uuid.uuid4()), proc)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_container_pid_counts_only_when_its_cgroup_names_the_container(tmp_path):
    proc = _proc(tmp_path, {"42": ("0::/docker/0123abcd\n", "/proc/self/ns/net")})
    assert podns.engine_shares_kernel(42, "0123abcd", proc)
    assert not podns.engine_shares_kernel(42, "ffff", proc)  # the pid of a container in a VM is someone else here
    assert not podns.engine_shares_kernel(0, "0123abcd", proc)
    assert not podns.engine_shares_kernel(43, "0123abcd", proc)


def test_children_cpu_sums_the_pods_processes(tmp_path):
    uid = str(uuid.uuid4())
    mark = f"0::/docker/abc/kubelet-kubepods-pod{uid.replace('-', '_')}.slice/x\n"
    proc = _proc(tmp_path, {"7": (mark, "/proc/self/ns/net"), "8": (mark, "/proc/self/ns/net"), "9": ("0::/other\n", "/proc/self/ns/net")})
    tck = os.sysconf("SC_CLK_TCK")
    # proc(5) stat: pid (comm) state ... fields 16/17 (cutime, cstime) are the 14th/15th after the comm's ')'.
    stat = "{pid} (a b) S" + " 0" * 12 + " {cu} {cs}" + " 0" * 30
    (proc / "7" / "stat").write_text(stat.format(pid=7, cu=0, cs=0))  # pause
    (proc / "8" / "stat").write_text(stat.format(pid=8, cu=3 * tck, cs=tck))  # kube-proxy after its syncs
    (proc / "9" / "stat").write_text(stat.format(pid=9, cu=50 * tck, cs=0))  # not the pod's
    assert podns.children_cpu_seconds(uid, proc) == 4.0
    with pytest.raises(SuiteError):
        podns.children_cpu_seconds(str(uuid.uuid4()), proc)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace and a cgroup)")
def test_a_command_entered_through_a_process_namespace_also_joins_its_cgroup(tmp_path):
    """Cilium's socket-LB acts on processes under the node's cgroup only: a probe entered as a pod must be there."""
    from proxysuite.cluster.local.netns import cgroup2_procs_file, exec_argv

    ours = cgroup2_procs_file(os.getpid())
    if ours is None:
        pytest.skip("no cgroup v2 hierarchy on this machine")
    group = os.path.join(os.path.dirname(ours), f"proxysuite-test-{os.getpid()}")
    os.mkdir(group)
    target = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        with open(os.path.join(group, "cgroup.procs"), "w") as fh:
            fh.write(str(target.pid))
        for _ in range(50):  # unshare execs sleep in the new namespace; wait until it has
            if os.readlink(f"/proc/{target.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            subprocess.run(["sleep", "0.05"])
        argv = exec_argv(f"/proc/{target.pid}/ns/net", ["sh", "-c", "grep ^0:: /proc/self/cgroup; readlink /proc/self/ns/net"])
        cgroup, netns = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
        assert netns == os.readlink(f"/proc/{target.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert cgroup == next(ln for ln in open(f"/proc/{target.pid}/cgroup") if ln.startswith("0::")).strip()
        assert cgroup.endswith(f"/proxysuite-test-{os.getpid()}")
    finally:
        target.kill()
        target.wait()
        for _ in range(50):  # the cgroup empties once the killed process is reaped
            try:
                os.rmdir(group)
                break
            except OSError:
                subprocess.run(["sleep", "0.1"])
