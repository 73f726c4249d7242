#!/bin/sh
# kube-proxy (iptables mode) that is right for IPv4 and blind for IPv6, as a proxy whose IPv6 rule set lags or
# is never written would be: an ip6tables-restore shim (restore_filter.sh) drops the ClusterIP rules of
# KUBE-SERVICES and every KUBE-NODEPORTS rule from what the IPv6 proxier hands over. The IPv4 proxier's
# iptables-restore is untouched. Usage: ipv6_blind.sh KUBE-PROXY ARGS...
set -eu
here=$(dirname "$0")
RESTORE=ip6tables-restore exec sh "$here/restore_filter.sh" \
    "grep -v -e '^-A KUBE-SERVICES .*cluster IP\"' -e '^-A KUBE-NODEPORTS '" "$@"
