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

In proxy mode a probe at start asks the upstream for what the tests need; what it does not
emulate (reputation entities and policies, PutEmailIdentityMailFromAttributes; tenant
SendingStatus changes and throttling, which no emulator API drives) is answered by FakeSES and
listed as `not_emulated` in the first line printed.

Control endpoints (never forwarded):
  GET  /_test/requests   every request so far: [{method, path, json}] (JSON bodies decoded)
  POST /_test/fail       {"path": P, "status": S, "type": CODE, "message": M, "times": N}:
                         the next N requests to path P get that error (with --upstream too)
  POST /_test/tenant     {"TenantName": N, "SendingStatus": "DISABLED"|"ENABLED"} (fake only)
  POST /_test/identity   {"EmailIdentity": D, "VerifiedForSendingStatus": B} (fake only); without
                         EmailIdentity: whether identities created from now on are verified
  POST /_test/reset      forget the recorded requests and pending failures

Prints {"port": N, "not_emulated": [...]} once listening on 127.0.0.1; exits when stdin closes.
"""
import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
REQUESTS = []
FAILURES = []  # [{"path", "status", "type", "message", "times"}]
TENANTS = {}  # FakeSES: name -> record
UPSTREAM = None


# Whether a new identity is verified for sending at once (as ministack does); a test sets it
# false to see mail wait for SES's verification, then verifies with /_test/identity.
VERIFY_NEW_IDENTITIES = [True]
ACCOUNT = "000000000000"
REGION = "us-east-1"
IDENTITIES = {}  # FakeSES: domain -> GetEmailIdentity body
CONFIG_SETS = set()
ASSOCIATIONS = {}  # tenant name -> [arn]
REPUTATION = {}  # arn -> policy arn
MAIL_FROM = {}  # hybrid mode: domain -> MailFromDomain set through the fake
# What the upstream (ministack) does not emulate, found by probe() at start; those operations
# are answered by FakeSES even in proxy mode, and the list is printed for the test to report.
NOT_EMULATED = []


def arn(kind, name):
    return f"arn:aws:ses:{REGION}:{ACCOUNT}:{kind}/{name}"


def segments(raw_path):
    """The path's segments, percent-decoded one by one (an ARN in a segment keeps its '/')."""
    return [urllib.parse.unquote(p) for p in raw_path.split("?")[0].split("/")]


def fake_answer(method, raw_path, body):
    """FakeSES: (status, headers, body) for the operations the tests use."""
    data = json.loads(body) if body else {}
    path = raw_path.split("?")[0]
    seg = segments(raw_path)
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
    if method == "POST" and path == "/v2/email/tenants":
        name = data.get("TenantName", "")
        if name in TENANTS:
            return error(400, "AlreadyExistsException", f"Tenant with name {name} already exists")
        return 200, {}, new_tenant(name)
    if method == "POST" and path == "/v2/email/tenants/get":
        rec = TENANTS.get(data.get("TenantName"))
        if rec is None:
            return error(404, "NotFoundException", "The requested tenant does not exist.")
        return 200, {}, {"Tenant": rec}
    if method == "POST" and path == "/v2/email/tenants/delete":
        if TENANTS.pop(data.get("TenantName"), None) is None:
            return error(404, "NotFoundException", "The requested tenant does not exist.")
        ASSOCIATIONS.pop(data.get("TenantName"), None)
        return 200, {}, {}
    if method == "POST" and path in ("/v2/email/tenants/resources",
                                     "/v2/email/tenants/resources/delete",
                                     "/v2/email/tenants/resources/list"):
        name = data.get("TenantName")
        if name not in TENANTS:
            return error(404, "NotFoundException", "The requested tenant does not exist.")
        arns = ASSOCIATIONS.setdefault(name, [])
        if path.endswith("/list"):
            kinds = {"identity": "EMAIL_IDENTITY", "configuration-set": "CONFIGURATION_SET"}
            return 200, {}, {"TenantResources": [
                {"ResourceType": kinds[a.split(":")[5].split("/")[0]], "ResourceArn": a}
                for a in arns]}
        target = data.get("ResourceArn")
        if path.endswith("/delete"):
            if target in arns:
                arns.remove(target)
            return 200, {}, {}
        if target in arns:
            return error(400, "AlreadyExistsException", f"{target} is already associated")
        arns.append(target)
        return 200, {}, {}
    if method == "POST" and path == "/v2/email/resources/tenants/list":
        target = data.get("ResourceArn")
        return 200, {}, {"ResourceTenants": [
            {"TenantName": n, "TenantId": TENANTS[n]["TenantId"], "ResourceArn": target}
            for n, arns in ASSOCIATIONS.items() if target in arns and n in TENANTS]}
    if method == "POST" and path == "/v2/email/identities":
        domain = data["EmailIdentity"]
        if domain in IDENTITIES:
            return error(400, "AlreadyExistsException", f"Identity {domain} already exists")
        byodkim = bool((data.get("DkimSigningAttributes") or {}).get("DomainSigningPrivateKey"))
        tokens = [] if byodkim else [uuid.uuid4().hex for _ in range(3)]
        IDENTITIES[domain] = {
            "IdentityType": "DOMAIN", "VerifiedForSendingStatus": VERIFY_NEW_IDENTITIES[0],
            "DkimAttributes": {"SigningEnabled": True, "Status": "PENDING", "Tokens": tokens,
                               "SigningAttributesOrigin": "EXTERNAL" if byodkim else "AWS_SES"},
            "MailFromAttributes": {"MailFromDomain": "", "MailFromDomainStatus": "PENDING",
                                   "BehaviorOnMxFailure": "USE_DEFAULT_VALUE"}}
        rec = IDENTITIES[domain]
        return 200, {}, {k: rec[k] for k in ("IdentityType", "VerifiedForSendingStatus",
                                             "DkimAttributes")}
    if len(seg) >= 5 and seg[1:4] == ["v2", "email", "identities"]:
        domain = seg[4]
        if domain not in IDENTITIES:
            return error(404, "NotFoundException", f"Identity {domain} does not exist")
        if method == "PUT" and seg[5:] == ["mail-from"]:
            IDENTITIES[domain]["MailFromAttributes"]["MailFromDomain"] = data.get("MailFromDomain", "")
            return 200, {}, {}
        if method == "GET" and len(seg) == 5:
            return 200, {}, IDENTITIES[domain]
        if method == "DELETE" and len(seg) == 5:
            del IDENTITIES[domain]
            return 200, {}, {}
    if method == "POST" and path == "/v2/email/configuration-sets":
        name = data["ConfigurationSetName"]
        if name in CONFIG_SETS:
            return error(400, "AlreadyExistsException", f"Configuration set <{name}> already exists.")
        CONFIG_SETS.add(name)
        return 200, {}, {}
    if len(seg) == 5 and seg[1:4] == ["v2", "email", "configuration-sets"]:
        if seg[4] not in CONFIG_SETS:
            return error(404, "NotFoundException", f"Configuration set <{seg[4]}> does not exist.")
        if method == "DELETE":
            CONFIG_SETS.discard(seg[4])
            return 200, {}, {}
        return 200, {}, {"ConfigurationSetName": seg[4]}
    answer = reputation_answer(method, seg, data)
    if answer is not None:
        return answer
    return error(404, "NotFoundException", f"FakeSES does not implement {method} {path}")


def reputation_answer(method, seg, data):
    """GetReputationEntity / UpdateReputationEntityPolicy of a tenant (by its ARN)."""
    if len(seg) < 7 or seg[1:5] != ["v2", "email", "reputation", "entities"]:
        return None
    ref = seg[6]
    rec = next((t for t in TENANTS.values() if t["TenantArn"] == ref), None)
    if method == "PUT" and seg[7:] == ["policy"]:
        REPUTATION[ref] = data["ReputationEntityPolicy"]
        return 200, {}, {}
    if method == "GET" and len(seg) == 7:
        status = rec["SendingStatus"] if rec else "ENABLED"
        return 200, {}, {"ReputationEntity": {
            "ReputationEntityReference": ref, "ReputationEntityType": seg[5],
            "ReputationManagementPolicy": REPUTATION.get(
                ref, f"arn:aws:ses:{REGION}:aws:reputation-policy/standard"),
            "SendingStatusAggregate": status}}
    return None


def new_tenant(name, status="ENABLED"):
    tenant_id = "tn-" + uuid.uuid4().hex[:20]
    TENANTS[name] = {"TenantName": name, "TenantId": tenant_id,
                     "TenantArn": arn("tenant", f"{name}/{tenant_id}"),
                     "CreatedTimestamp": int(time.time()), "SendingStatus": status}
    return TENANTS[name]


def not_emulated(method, raw_path):
    """In proxy mode, whether FakeSES answers this request (the probe found it not emulated)."""
    seg = segments(raw_path)
    if "mail_from" in NOT_EMULATED and method == "PUT" and seg[-1:] == ["mail-from"]:
        return True
    return "reputation_entities" in NOT_EMULATED and seg[1:5] == ["v2", "email", "reputation",
                                                                   "entities"]


def probe():
    """Asks the upstream for what the tests need and it may not emulate. An operation it does
    not know answers 404 naming the path, not the resource."""
    def unknown(method, path, body):
        request = urllib.request.Request(UPSTREAM + path, method=method,
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10):
                return False
        except urllib.error.HTTPError as e:
            return e.code == 404 and b"Unknown" in e.read()
    ref = urllib.parse.quote(arn("tenant", "probe/tn-probe"), safe="")
    if unknown("GET", f"/v2/email/reputation/entities/RESOURCE/{ref}", None):
        NOT_EMULATED.append("reputation_entities")
    if unknown("PUT", "/v2/email/identities/probe.mailmux.invalid/mail-from",
               {"MailFromDomain": "bounce.probe.mailmux.invalid"}):
        NOT_EMULATED.append("mail_from")
    # Nothing in the SES v2 API changes a tenant's SendingStatus (SES does, on its findings),
    # and an emulator has no reason to throttle: both are the fake's, always.
    NOT_EMULATED.extend(["tenant_sending_status_changes", "throttling"])


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
        if UPSTREAM is None or not_emulated(self.command, self.path):
            with LOCK:
                if UPSTREAM is not None and self.path.endswith("/mail-from"):
                    # The identity lives upstream; the fake keeps its MAIL FROM domain.
                    MAIL_FROM[segments(self.path)[4]] = json.loads(body).get("MailFromDomain")
                    answer = (200, {}, {})
                else:
                    answer = fake_answer(self.command, self.path, body)
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
        seg = segments(self.path)
        if (status == 200 and self.command == "GET" and len(seg) == 5
                and seg[1:4] == ["v2", "email", "identities"] and seg[4] in MAIL_FROM):
            # The MAIL FROM the fake answered for: shown as SES would show it.
            doc = json.loads(rbody)
            doc["MailFromAttributes"] = {"MailFromDomain": MAIL_FROM[seg[4]],
                                         "MailFromDomainStatus": "PENDING",
                                         "BehaviorOnMxFailure": "USE_DEFAULT_VALUE"}
            rbody = json.dumps(doc).encode()
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
                rec = TENANTS.get(data["TenantName"]) or new_tenant(data["TenantName"])
                rec["SendingStatus"] = data.get("SendingStatus", rec["SendingStatus"])
                return self.reply(200, {}, rec)
            if path == "/_test/identity":
                if "EmailIdentity" not in data:
                    VERIFY_NEW_IDENTITIES[0] = data["VerifiedForSendingStatus"]
                    return self.reply(200, {}, {})
                rec = IDENTITIES[data["EmailIdentity"]]
                rec["VerifiedForSendingStatus"] = data["VerifiedForSendingStatus"]
                rec["DkimAttributes"]["Status"] = (
                    "SUCCESS" if data["VerifiedForSendingStatus"] else "PENDING")
                return self.reply(200, {}, rec)
            if path == "/_test/reset":
                REQUESTS.clear()
                FAILURES.clear()
                MAIL_FROM.clear()
                return self.reply(200, {}, {})
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
    if UPSTREAM is not None:
        probe()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1], "not_emulated": NOT_EMULATED}), flush=True)
    sys.stdin.read()  # until the test process closes our stdin (or dies)
    server.shutdown()


if __name__ == "__main__":
    main()
