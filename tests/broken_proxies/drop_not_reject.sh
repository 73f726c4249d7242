#!/bin/sh
# kube-proxy (iptables mode) whose every REJECT is written as a DROP: an iptables-restore shim on its PATH
# rewrites the rules kube-proxy hands over. Usage: drop_not_reject.sh KUBE-PROXY ARGS...
here=$(dirname "$0")
exec sh "$here/restore_filter.sh" "sed 's/-j REJECT/-j DROP/'" "$@"
