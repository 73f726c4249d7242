#!/bin/sh
# kube-proxy (iptables mode) plus a second writer on its table: for about 1 s it leaves kube-proxy's jump from
# KUBE-SERVICES to KUBE-NODEPORTS in place (putting it back if needed), then for about 2 s it keeps deleting
# it (also when a kube-proxy sync restores it), over and over. NodePorts work a third of the time, the way two
# controllers fighting over one table look. A sample taken in one quick burst right after the first answer
# can land inside a good second; a sample spread over 2 s cannot. Usage: intermittent.sh KUBE-PROXY ARGS...
"$@" --proxy-mode=iptables &
kp=$!
trap 'kill $kp 2>/dev/null; exit 0' TERM INT
jump() { iptables-save -t nat 2>/dev/null | grep -- '^-A KUBE-SERVICES .*-j KUBE-NODEPORTS' | head -1; }
rule=""
while kill -0 $kp 2>/dev/null; do
  now=$(jump)
  [ -n "$now" ] && rule=$now
  [ -n "$rule" ] || { sleep 0.2; continue; }
  [ -n "$now" ] || eval "iptables -t nat -A ${rule#-A }" 2>/dev/null
  sleep 1
  i=0
  while [ $i -lt 40 ]; do
    [ -n "$(jump)" ] && eval "iptables -t nat -D ${rule#-A }" 2>/dev/null
    sleep 0.05
    i=$((i + 1))
  done
done
