#!/usr/bin/env python3
"""SES v2 on loopback for the end-to-end tests: a recording pass-through proxy in front of
ministack (--upstream URL), or, without --upstream, FakeSES: a small fake of the few SES v2
operations ministack does not emulate the way the tests need (throttling, SendingStatus
changes). Both record every request, so a test can assert the exact raw bytes, TenantName and
configuration set of each SendEmail, which ministack does not keep.

FakeSES follows the SES v2 REST/JSON wire format: the paths of the SES v2 API
(/v2/email/account, /v2/email/outbound-emails, /v2/email/tenants/get …), JSON bodies with
SES's member names, errors as {"message": …} with the code in the `x-amzn-ErrorType` header.
It is a fake, not an emulator: it answers only what the tests use, and checks no signature.

Control endpoints (never forwarded):
  GET  /_test/requests   every request so far: [{method, path, json}] (JSON bodies decoded)
  POST /_test/fail       {"path": P, "status": S, "type": CODE, "message": M, "times": N}:
                         the next N requests to path P get that error (with --upstream too)
  POST /_test/tenant     {"TenantName": N, "SendingStatus": "DISABLED"|"ENABLED"} (fake only)

Prints {"port": N} once listening on 127.0.0.1; exits when stdin closes.
"""
import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
REQUESTS = []
FAILURES = []  # [{"path", "status", "type", "message", "times"}]
TENANTS = {}  # FakeSES: name -> record
UPSTREAM = None


def fake_answer(method, path, body):
    """FakeSES: (status, headers, body) for the operations the tests use."""
    data = json.loads(body) if body else {}
    if method == "GET" and path == "/v2/email/account":
        return 200, {}, {"SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 100.0,
                                       "SentLast24Hours": 0.0},
                         "SendingEnabled": True, "ProductionAccessEnabled": True}
    if method == "POST" and path == "/v2/email/outbound-emails":
        name = data.get("TenantName")
        rec = TENANTS.get(name)
        if rec is not None and rec["SendingStatus"] == "DISABLED":
            return error(400, "SendingPausedException",
                         f"Sending is paused for tenant {name}: reputation review")
        return 200, {}, {"MessageId": f"{uuid.uuid4()}-000000@email.amazonses.com"}
    if method == "POST" and path == "/v2/email/tenants/get":
        rec = TENANTS.get(data.get("TenantName"))
        if rec is None:
            return error(404, "NotFoundException", "The requested tenant does not exist.")
        return 200, {}, {"Tenant": rec}
    return error(404, "NotFoundException", f"FakeSES does not implement {method} {path}")


def error(status, code, message):
    return status, {"x-amzn-ErrorType": code}, {"message": message}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        if path.startswith("/_test/"):
            return self.control(path, body)
        try:
            decoded = json.loads(body) if body else None
        except ValueError:
            decoded = None
        with LOCK:
            REQUESTS.append({"method": self.command, "path": path, "json": decoded,
                             "at": time.time()})
            failure = next((f for f in FAILURES if f["path"] == path and f["times"] > 0), None)
            if failure is not None:
                failure["times"] -= 1
        if failure is not None:
            return self.reply(*error(failure["status"], failure["type"], failure["message"]))
        if UPSTREAM is None:
            with LOCK:
                answer = fake_answer(self.command, path, body)
            return self.reply(*answer)
        return self.forward(body)

    def forward(self, body):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        request = urllib.request.Request(UPSTREAM + self.path, data=body if body else None,
                                         headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, rheaders, rbody = response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            status, rheaders, rbody = e.code, e.headers, e.read()
        self.send_response(status)
        for k, v in rheaders.items():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(rbody)))
        self.end_headers()
        self.wfile.write(rbody)

    def control(self, path, body):
        data = json.loads(body) if body else {}
        with LOCK:
            if path == "/_test/requests":
                return self.reply(200, {}, REQUESTS)
            if path == "/_test/fail":
                data.setdefault("times", 1)
                data.setdefault("message", "injected by the test")
                FAILURES.append(data)
                return self.reply(200, {}, {})
            if path == "/_test/tenant":
                rec = TENANTS.setdefault(data["TenantName"], {
                    "TenantName": data["TenantName"], "TenantId": "tn-" + uuid.uuid4().hex[:20],
                    "TenantArn": f"arn:aws:ses:us-east-1:000000000000:tenant/{data['TenantName']}",
                    "SendingStatus": "ENABLED"})
                rec["SendingStatus"] = data.get("SendingStatus", rec["SendingStatus"])
                return self.reply(200, {}, rec)
        return self.reply(404, {}, {"message": "unknown control path"})

    def reply(self, status, headers, payload):
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def main():
    global UPSTREAM
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", help="forward to this SES v2 endpoint (ministack)")
    args = parser.parse_args()
    UPSTREAM = args.upstream.rstrip("/") if args.upstream else None
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    sys.stdin.read()  # until the test process closes our stdin (or dies)
    server.shutdown()


if __name__ == "__main__":
    main()
