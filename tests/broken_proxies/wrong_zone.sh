#!/bin/sh
# kube-proxy (iptables mode) that believes it runs on a node of the other zone: its --hostname-override names
# the neighbouring node (node-1 <-> node-2, node-3 <-> node-4, ...; the local provider alternates zones, so the
# neighbour is always in the other zone). kube-proxy takes its zone from the labels of the Node it is named
# after (pkg/proxy/topology.go reads topology.kubernetes.io/zone of that Node), so it prefers the other zone's
# endpoints for every Service that asks for nearby ones, and is otherwise an ordinary kube-proxy: Services
# without trafficDistribution are served as usual. Usage: wrong_zone.sh KUBE-PROXY ARGS...
# (ARGS contain --hostname-override node-N, as tests/test_broken_proxies.py passes them.)
prog=$1
shift
out=""
swap=""
for arg in "$@"; do
  if [ "$swap" = 1 ]; then
    n=${arg#node-}
    if [ $((n % 2)) = 1 ]; then arg="node-$((n + 1))"; else arg="node-$((n - 1))"; fi
    swap=""
  fi
  [ "$arg" = "--hostname-override" ] && swap=1
  out="$out '$arg'"
done
eval "exec \"\$prog\" $out --proxy-mode=iptables"
