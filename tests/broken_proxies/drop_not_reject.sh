#!/bin/sh
# kube-proxy (iptables mode) whose every REJECT is written as a DROP: an iptables-restore shim on its PATH
# rewrites the rules kube-proxy hands over. Usage: drop_not_reject.sh KUBE-PROXY ARGS...
set -eu
shim=$(mktemp -d /tmp/ps-broken-shim.XXXXXX)
trap 'rm -rf "$shim"' EXIT
real=$(command -v iptables-restore)
cat > "$shim/iptables-restore" <<SHIM
#!/bin/sh
sed 's/-j REJECT/-j DROP/' | exec $real "\$@"
SHIM
chmod +x "$shim/iptables-restore"
PATH="$shim:$PATH" "$@" --proxy-mode=iptables &
kp=$!
trap 'kill $kp 2>/dev/null; wait $kp; rm -rf "$shim"' EXIT TERM INT
wait $kp
