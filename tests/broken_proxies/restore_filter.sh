#!/bin/sh
# Runs kube-proxy in iptables mode with an iptables-restore first on its PATH that pipes what kube-proxy hands
# over through FILTER (a shell command line) before the real iptables-restore applies it: the shared half of the
# broken proxies that rewrite kube-proxy's rules. Usage: restore_filter.sh FILTER KUBE-PROXY ARGS...
# RESTORE=ip6tables-restore shims the IPv6 rule set instead, leaving IPv4 as kube-proxy wrote it.
set -eu
filter=$1
shift
restore=${RESTORE:-iptables-restore}
shim=$(mktemp -d /tmp/ps-broken-shim.XXXXXX)
trap 'rm -rf "$shim"' EXIT
real=$(command -v "$restore")
cat > "$shim/$restore" <<SHIM
#!/bin/sh
$filter | exec $real "\$@"
SHIM
chmod +x "$shim/$restore"
PATH="$shim:$PATH" "$@" --proxy-mode=iptables &
kp=$!
# Under set -e a failing command in a trap ends the shell: kube-proxy, also signalled, may already be gone.
trap 'kill $kp 2>/dev/null || true; wait $kp || true; rm -rf "$shim"' EXIT TERM INT
wait $kp
