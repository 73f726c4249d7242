#!/bin/sh
# kube-proxy (iptables mode) that forgets established connections: when it starts and after every sync it
# flushes the node's conntrack table (`conntrack -F`, in the node's network namespace, where this runs). Rules
# stay right, so new connections work; an established connection's next packet is translated afresh and,
# with several backends, usually lands on another one (TCP: reset; UDP: another backend answers).
# A sync is seen as a change of kubeproxy_sync_proxy_rules_last_timestamp_seconds. Usage: flush_conntrack.sh KUBE-PROXY ARGS...
metrics=""
prev=""
for a in "$@"; do
  [ "$prev" = "--metrics-bind-address" ] && metrics=$a
  prev=$a
done
[ -n "$metrics" ] || { echo "flush_conntrack.sh: pass --metrics-bind-address" >&2; exit 2; }
conntrack -F 2>/dev/null
"$@" --proxy-mode=iptables &
kp=$!
trap 'kill $kp 2>/dev/null; exit 0' TERM INT
last=""
while kill -0 $kp 2>/dev/null; do
  now=$(curl -s --max-time 1 "http://$metrics/metrics" | grep '^kubeproxy_sync_proxy_rules_last_timestamp_seconds')
  if [ -n "$now" ] && [ "$now" != "$last" ]; then
    conntrack -F 2>/dev/null
    last=$now
  fi
  sleep 0.1
done
