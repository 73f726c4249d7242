#!/bin/sh
# kube-proxy (iptables mode) that answers addresses no Service holds: an iptables-restore shim on its PATH (restore_filter.sh, filter catch_all_filter.py) adds,
# at the end of KUBE-SERVICES (before the NodePort jump), a catch-all for every service range it can see (the
# configured one, and the /24 around every cluster IP of another range) that sends TCP to the first Service port named http
# and UDP to the first named udp (the suite's template ports), as a proxy with a range-wide fallback rule would. Allocated cluster
# IPs keep their own rules, which match first. Usage: answer_unallocated.sh CIDR KUBE-PROXY ARGS...
set -eu
cidr=$1
shift
here=$(dirname "$0")
exec sh "$here/restore_filter.sh" "python3 $here/catch_all_filter.py $cidr" "$@"
