#!/bin/sh
# kube-proxy (iptables mode, a resync every 3 s) plus a second writer on its table: 1.5 s after every sync it
# deletes the jump from KUBE-SERVICES to KUBE-NODEPORTS, which the next sync puts back. NodePorts therefore
# work for the first half of each sync period and are black-holed the second half, the way a
# resync race between two controllers of one table looks. Usage: intermittent.sh KUBE-PROXY ARGS...
"$@" --proxy-mode=iptables --iptables-sync-period=3s &
kp=$!
trap 'kill $kp 2>/dev/null; exit 0' TERM INT
while kill -0 $kp 2>/dev/null; do
  rule=$(iptables-save -t nat 2>/dev/null | grep -- '^-A KUBE-SERVICES .*-j KUBE-NODEPORTS' || true)
  if [ -n "$rule" ]; then
    sleep 1.5
    eval "iptables -t nat -D ${rule#-A }" 2>/dev/null || true
  fi
  sleep 0.05
done
