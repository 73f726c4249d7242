#!/bin/sh
# kube-proxy (iptables mode) plus a second writer on its table that, every 1.5 s, takes away and then puts back
# the jump from KUBE-SERVICES to KUBE-NODEPORTS: NodePorts work half of the time and are black-holed the other
# half, the way two controllers fighting over one table look. A sample taken in one burst right after the first
# answer usually lands in a good half; a sample spread over 2 s cannot. Usage: intermittent.sh KUBE-PROXY ARGS...
"$@" --proxy-mode=iptables &
kp=$!
trap 'kill $kp 2>/dev/null; exit 0' TERM INT
rule=""
while kill -0 $kp 2>/dev/null; do
  now=$(iptables-save -t nat 2>/dev/null | grep -- '^-A KUBE-SERVICES .*-j KUBE-NODEPORTS' | head -1)
  [ -n "$now" ] && rule=$now
  if [ -n "$rule" ]; then
    [ -n "$now" ] || eval "iptables -t nat -A ${rule#-A }" 2>/dev/null
    sleep 1.5
    eval "iptables -t nat -D ${rule#-A }" 2>/dev/null
  fi
  sleep 1.5
done
