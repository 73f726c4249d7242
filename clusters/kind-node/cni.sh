#!/bin/bash
# proxysuite-cni: pod networking for the offline kind node image, from Debian's CNI plugins (kindnetd, kind's
# default, is not available offline). Runs in a hostNetwork DaemonSet pod on every node, like kindnetd:
# writes a ptp + host-local CNI config for this node's pod CIDR, and routes every other node's pod CIDR via
# that node's InternalIP. Reconciles every 5 s.
set -uo pipefail
: "${NODE_NAME:?the DaemonSet passes NODE_NAME}"
CONF=/host/etc/cni/net.d/10-proxysuite-ptp.conflist
while true; do
  nodes=$(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}') || { sleep 2; continue; }
  while read -r name cidr ip; do
    [[ -n "${cidr}" && -n "${ip}" ]] || continue
    if [[ "${name}" == "${NODE_NAME}" ]]; then
      want=$(printf '{"cniVersion":"0.4.0","name":"proxysuite-ptp","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,"ipam":{"type":"host-local","ranges":[[{"subnet":"%s"}]],"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}' "${cidr}")
      if [[ "$(cat "${CONF}" 2>/dev/null)" != "${want}" ]]; then
        echo "${want}" >"${CONF}.tmp" && mv -f "${CONF}.tmp" "${CONF}" && echo "pod CIDR ${cidr}: wrote ${CONF#/host}"
      fi
    else
      ip route replace "${cidr}" via "${ip}" proto static 2>/dev/null || echo "route ${cidr} via ${ip} failed"
    fi
  done <<<"${nodes}"
  sleep 5
done
