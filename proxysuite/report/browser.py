"""Open a report in headless Chromium and check that it really renders.

Uses the DevTools protocol over a websocket (``websocket-client``, already a
dependency of the Kubernetes client) rather than ``--dump-dom``: the DOM alone
cannot show console errors, blocked requests or a chart that is present but
zero-sized. The check loads the file with the network unused (any request that
is not ``file:`` or ``data:`` counts as a failure: the report must be
self-contained), then measures every ``figure.chart`` and takes a full-page
screenshot::

    result = check_report(Path("reports/compare-modes/compare-modes.html"), Path("reports/compare-modes/screenshot.png"))
    result["charts"]          # [{"key": "sync", "width": 704.0, "height": 418.0, "marks": 93, ...}, ...]
    result["console_errors"]  # [] when clean
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
         "--window-size=1280,1600"]

CHART_PROBE = """JSON.stringify({
  charts: [...document.querySelectorAll('figure.chart')].map(f => {
    const s = f.querySelector('svg'); const r = s ? s.getBoundingClientRect() : {width: 0, height: 0};
    return {key: f.dataset.chart, svg: !!s, width: r.width, height: r.height,
            marks: s ? s.querySelectorAll('path, use, line, polyline, rect').length : 0,
            texts: s ? s.querySelectorAll('text').length : 0};
  }),
  flags: [...document.querySelectorAll('[data-flag]')].map(e => e.dataset.flag),
  tables: document.querySelectorAll('table').length,
  title: document.title,
})"""


class _CDP:
    def __init__(self, url: str, timeout: float):
        import websocket

        self.timeout = timeout
        self.ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        my = self.next_id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method} failed: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float) -> dict:
        for e in self.events:
            if e["method"] == method:
                return e
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg
        raise TimeoutError(f"Chromium sent no {method} within {timeout:.0f}s")

    def drain(self, seconds: float) -> None:
        """Collect late events (console messages after load) for a short while."""
        self.ws.settimeout(0.1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                msg = json.loads(self.ws.recv())
            except Exception:  # noqa: BLE001 - websocket timeout: nothing more arrived
                continue
            if "method" in msg:
                self.events.append(msg)
        self.ws.settimeout(self.timeout)

    def close(self):
        self.ws.close()


def check_report(html: Path, screenshot: Path | None = None, chromium: str = CHROMIUM, timeout: float = 60) -> dict:
    """Load ``html`` in headless Chromium; return charts, console errors, non-local requests (and save a screenshot)."""
    html = Path(html).resolve()
    profile = tempfile.mkdtemp(prefix="ps-chromium-")
    proc = subprocess.Popen([chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        end = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"{chromium} exited with {proc.returncode}: {stderr[-1000:]}")
            if time.monotonic() > end:
                raise TimeoutError(f"{chromium} did not open its DevTools port within {timeout:.0f}s")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        cdp = _CDP(page["webSocketDebuggerUrl"], timeout)
        for domain in ("Runtime", "Log", "Network", "Page"):
            cdp.call(f"{domain}.enable")
        cdp.call("Page.navigate", url=html.as_uri())
        cdp.wait_event("Page.loadEventFired", timeout)
        cdp.drain(0.5)
        probe = json.loads(cdp.call("Runtime.evaluate", expression=CHART_PROBE, returnByValue=True)["result"]["value"])
        errors = []
        for e in cdp.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                errors.append(p["exceptionDetails"].get("text", "exception"))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append(p["entry"]["text"])
        remote = [e["params"]["request"]["url"] for e in cdp.events if e["method"] == "Network.requestWillBeSent"
                  and not e["params"]["request"]["url"].startswith(("file:", "data:", "about:"))]
        if screenshot is not None:
            size = cdp.call("Page.getLayoutMetrics")["cssContentSize"]
            cdp.call("Emulation.setDeviceMetricsOverride", width=1280, height=int(min(size["height"], 16000)),
                     deviceScaleFactor=1, mobile=False)
            shot = cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        cdp.close()
        return {**probe, "console_errors": errors, "remote_requests": remote}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # our own Chromium and its helpers (own session), nothing else
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(profile, ignore_errors=True)
