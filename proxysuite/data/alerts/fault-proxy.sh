#!/bin/sh
# kube-proxy with its rule-programming binaries (iptables-restore, ip6tables-restore, nft) behind a wrapper
# that obeys FAULT_FILE, read on every call, so a fault can be switched on in a running proxy:
#   (missing or empty)  run the real binary
#   hang                never return (the sync hangs; the metrics server keeps answering)
#   fail                exit 1 without touching the rules (kube-proxy counts a restore / sync failure)
#   slow:N              sleep N seconds, then run the real binary (every sync takes at least N s)
# Used by proxysuite.alerts.capture to record real series for the alert tests (docs/alerts.md).
# Usage: fault-proxy.sh FAULT_FILE KUBE-PROXY ARGS...
set -eu
fault=$1
shift
bin="$fault.bin"
mkdir -p "$bin"
for tool in iptables-restore ip6tables-restore nft; do
  real=$(command -v "$tool" || true)
  [ -n "$real" ] || continue
  cat >"$bin/$tool" <<WRAP
#!/bin/sh
f=\$(cat '$fault' 2>/dev/null || true)
case "\$f" in
  hang) exec sleep infinity ;;
  fail) echo "$tool: failure injected by proxysuite ($fault)" >&2; exit 1 ;;
  slow:*) sleep "\${f#slow:}" ;;
esac
exec '$real' "\$@"
WRAP
  chmod +x "$bin/$tool"
done
PATH="$bin:$PATH" exec "$@"
