#!/bin/sh
# kube-proxy (iptables mode) whose metrics server (and /proxyMode) listens on another port than the one the
# proxy declares (--proxy-health kube-proxy promises {metrics_addr}). Usage: no_metrics.sh KUBE-PROXY ARGS...
exec "$@" --proxy-mode=iptables --metrics-bind-address=127.0.0.1:10999
