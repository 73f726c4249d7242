"""A proxy that looks healthy and forwards nothing: kube-proxy's endpoints, no datapath.

Usage (placeholders filled by the local provider): forward_nothing.py {healthz_addr} {metrics_addr}
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS = """# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram
kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="+Inf"} 1
kubeproxy_sync_proxy_rules_duration_seconds_sum 0.01
kubeproxy_sync_proxy_rules_duration_seconds_count 1
# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge
kubeproxy_sync_proxy_rules_last_timestamp_seconds %d
# TYPE kubeproxy_network_programming_duration_seconds histogram
kubeproxy_network_programming_duration_seconds_bucket{le="+Inf"} 0
kubeproxy_network_programming_duration_seconds_sum 0
kubeproxy_network_programming_duration_seconds_count 0
# TYPE kubeproxy_sync_proxy_rules_iptables_total gauge
kubeproxy_sync_proxy_rules_iptables_total{table="nat"} 0
"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        now = time.time()
        if self.path in ("/healthz", "/livez"):
            body, ctype = json.dumps({"lastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                                      "currentTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}), "application/json"
        elif self.path == "/metrics":
            body, ctype = METRICS % now, "text/plain"
        elif self.path == "/proxyMode":
            body, ctype = "iptables", "text/plain"
        else:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def serve(addr: str) -> ThreadingHTTPServer:
    host, _, port = addr.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    serve(sys.argv[1])
    serve(sys.argv[2])
    threading.Event().wait()
