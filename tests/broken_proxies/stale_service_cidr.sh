#!/bin/sh
# kube-proxy (iptables mode) that knows only the service range it was configured with, as a proxy that reads
# --service-cluster-ip-range instead of watching ServiceCIDR objects would: an iptables-restore shim on its PATH (restore_filter.sh, filter range_only_filter.py)
# drops every "cluster IP" rule of KUBE-SERVICES whose address lies outside that range, so a Service whose
# ClusterIP comes from a second ServiceCIDR is never short-circuited. Usage: stale_service_cidr.sh CIDR KUBE-PROXY ARGS...
set -eu
cidr=$1
shift
here=$(dirname "$0")
exec sh "$here/restore_filter.sh" "python3 $here/range_only_filter.py $cidr" "$@"
