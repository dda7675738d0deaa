#!/usr/bin/env python3
"""Webhook receiver for mailmux's end-to-end tests: a tenant's HTTP endpoint that verifies every
request with the `standardwebhooks` package (the Standard Webhooks reference library), never with
mailmux's own code.

Listens on 127.0.0.1 (port 0), prints exactly one line {"port": N} on stdout once listening, and
runs until SIGTERM/SIGINT or EOF on stdin (a stdin of /dev/null is not watched). Requests are
served on threads, so one path that hangs does not hold up another.

Every path is an endpoint of its own, configured with POST /_control (JSON):
  {"path": "/a", "secrets": ["whsec_..."], "fail_first": N, "status": 500,
   "hang_secs": S, "redirect": "http://..."}
- secrets: the request is verified against each; the record says which ones verified it;
- fail_first: the first N requests to the path get `status` (default 500);
- hang_secs: every request waits S seconds before its answer (a hanging endpoint);
- redirect: every request gets 302 to this location.
Otherwise a request gets 204.

GET /_received returns {"requests": [...]} in arrival order, each
{"path", "webhook_id", "timestamp", "signature", "verified": [bool per secret], "body": the
JSON payload (or null), "answered": status, "at": arrival time (seconds)}.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

LOCK = threading.Lock()
ENDPOINTS = {}
RECEIVED = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        if self.path == "/_received":
            with LOCK:
                body = json.dumps({"requests": RECEIVED}).encode()
            self.reply(200, body, [("Content-Type", "application/json")])
        else:
            self.reply(404)

    def do_POST(self):
        body = self.read_body()
        if self.path == "/_control":
            config = json.loads(body)
            with LOCK:
                endpoint = ENDPOINTS.setdefault(config["path"], {"count": 0})
                endpoint.update({k: v for k, v in config.items() if k != "path"})
            self.reply(200, b"{}", [("Content-Type", "application/json")])
            return
        arrived = time.time()
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            endpoint = ENDPOINTS.setdefault(self.path, {"count": 0})
            endpoint["count"] += 1
            count = endpoint["count"]
            config = dict(endpoint)
        verified = []
        for secret in config.get("secrets", []):
            try:
                Webhook(secret).verify(body, headers)
                verified.append(True)
            except Exception:
                verified.append(False)
        if config.get("hang_secs"):
            time.sleep(config["hang_secs"])
        if config.get("redirect"):
            status = 302
        elif count <= config.get("fail_first", 0):
            status = config.get("status", 500)
        else:
            status = 204
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        with LOCK:
            RECEIVED.append({
                "path": self.path,
                "webhook_id": headers.get("webhook-id"),
                "timestamp": headers.get("webhook-timestamp"),
                "signature": headers.get("webhook-signature"),
                "verified": verified,
                "body": payload,
                "answered": status,
                "at": arrived,
            })
        if status == 302:
            self.reply(302, b"", [("Location", config["redirect"])])
        else:
            self.reply(status)


def stdin_is_devnull():
    try:
        st = os.fstat(sys.stdin.fileno())
        null = os.stat(os.devnull)
        return (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino)
    except OSError:
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--address", default="127.0.0.1")
    args = ap.parse_args()
    server = ThreadingHTTPServer((args.address, 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not stdin_is_devnull():
        def watch_stdin():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            finally:
                stop()
        threading.Thread(target=watch_stdin, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
