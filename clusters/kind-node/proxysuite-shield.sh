#!/bin/bash
# proxysuite: run by kind's entrypoint just before systemd. A kind node shares the machine's kernel, and
# kernel.* / vm.* settings are not per network namespace: whatever the node writes there changes the machine.
#
# 1. kubelet (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables) writes these when they differ
#    from what it wants, and fails to start when a write fails. Each one that differs gets a file holding
#    kubelet's value bind-mounted over it, in this node's mount namespace only: kubelet reads its value and
#    writes nothing; the machine keeps its own.
# 2. systemd (PID 1 of the node) raises fs.file-max to LONG_MAX and fs.nr_open at boot, unconditionally
#    (bump_file_max_and_nr_open). Each gets a file holding the machine's current value bind-mounted over it:
#    systemd's write lands in that file. (Found by comparing the machine's sysctls around a node's boot.)
#    The Cilium agent writes kernel.unprivileged_bpf_disabled=1 (irreversible until reboot) and
#    kernel.timer_migration=0 at start (pkg/datapath/loader/base.go, Reinitialize) through the node's
#    /proc/sys/kernel; they are absorbed the same way (docs/cilium.md).
# 3. systemd-sysctl is masked in this image (it would apply Debian's fs.protected_* and kernel.* defaults to the
#    machine); the per-namespace net.* settings kind ships in /etc/sysctl.d are applied here instead.
set -uo pipefail

declare -A WANT=(
  [vm/overcommit_memory]=1 [vm/panic_on_oom]=0 [kernel/panic]=10 [kernel/panic_on_oops]=1
  [kernel/keys/root_maxkeys]=1000000 [kernel/keys/root_maxbytes]=25000000
)
SHIELD_DIR="${PROXYSUITE_SHIELD_DIR:-/kind/shielded-sysctls}"
mkdir -p "${SHIELD_DIR}"
for key in "${!WANT[@]}"; do
  file="/proc/sys/${key}"
  [[ -e "${file}" ]] || continue
  if [[ "$(cat "${file}")" != "${WANT[${key}]}" ]]; then
    fake="${SHIELD_DIR}/${key//\//.}"
    echo "${WANT[${key}]}" >"${fake}"
    mount --bind "${fake}" "${file}" && echo "INFO: proxysuite: shielded ${key}" >&2
  fi
done

for key in fs/file-max fs/nr_open kernel/unprivileged_bpf_disabled kernel/timer_migration; do
  file="/proc/sys/${key}"
  [[ -e "${file}" ]] || continue
  fake="${SHIELD_DIR}/${key//\//.}"
  cat "${file}" >"${fake}"
  mount --bind "${fake}" "${file}" && echo "INFO: proxysuite: shielded ${key}" >&2
done

for conf in /etc/sysctl.d/*.conf; do
  [[ -f "${conf}" ]] || continue
  while IFS='=' read -r key value; do
    key="${key// /}"; value="${value## }"
    [[ "${key}" == net.* ]] && sysctl -q -w "${key}=${value}" >/dev/null 2>&1
  done < <(grep -E '^[[:space:]]*net\.' "${conf}")
done
exit 0
