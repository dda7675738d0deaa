#!/usr/bin/env bash
# The MX side under load: acceptance with authentication verdicts, then the webhook hand-off.
#
#   bash benches/inbound.sh [SESSIONS] [MESSAGES] [SIZE]   (defaults: 20 4000 10240)
#
# A loopback DNS server (tests/support/dns_server.py) serves the sender's SPF, DKIM key and
# DMARC policy (p=reject) with a one-hour TTL, as real zones do, so the verifiers' caches work
# as in production. Every message is DKIM-signed by dkimpy for sender.test, so each one gets
# SPF pass at MAIL FROM, then DKIM, ARC and DMARC verdicts at the end of DATA and an
# Authentication-Results header, before it is made durable and answered 250. A catch-all
# webhook rule hands each message to a local HTTP receiver (Python, keep-alive, counts and
# answers 204; it does not verify signatures: the tests do that with `standardwebhooks`).
#
# Reported: accepted msgs/s and p50/p99 end-of-DATA→250 (benches/loadgen.rs on the MX port),
# end-to-end msgs/s (until the receiver has every webhook), mailmux peak RSS, and the verdicts
# of one payload (to show the checks ran).
set -euo pipefail

SESSIONS="${1:-20}"
MESSAGES="${2:-4000}"
SIZE="${3:-10240}"
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# dnslib and dkimpy live in the tests' virtualenv (.ci/run creates it).
PY="${MAILMUX_TEST_PYTHON:-$REPO/.venv/bin/python3}"
[ -x "$PY" ] || { echo "needs $PY (python3 -m venv .venv && .venv/bin/pip install -r tests/support/requirements.txt)" >&2; exit 1; }

echo "== zone and signed message"
"$PY" - "$WORK" "$SIZE" <<'EOF'
import base64, json, sys
import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

work, size = sys.argv[1], int(sys.argv[2])
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
public = key.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
ttl = 3600
json.dump({
    "zones": ["sender.test", "inbound.test", "test"],
    "records": [
        {"name": "sender.test", "type": "TXT", "value": "v=spf1 ip4:127.0.0.1 -all", "ttl": ttl},
        {"name": "_dmarc.sender.test", "type": "TXT", "value": "v=DMARC1; p=reject", "ttl": ttl},
        {"name": "s1._domainkey.sender.test", "type": "TXT",
         "value": "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode(), "ttl": ttl},
    ],
}, open(f"{work}/zone.json", "w"))
line = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n"
body = b""
while len(body) < size:
    body += line
message = (b"From: Alice <alice@sender.test>\r\nTo: <user@inbound.test>\r\n"
           b"Subject: inbound bench\r\nMessage-ID: <bench@sender.test>\r\n"
           b"Date: Tue, 01 Dec 2026 12:00:00 +0000\r\n\r\n" + body)
signature = dkim.sign(message, b"s1", b"sender.test", private,
                      include_headers=[b"from", b"to", b"subject", b"message-id", b"date"])
open(f"{work}/message.eml", "wb").write(signature + message)
EOF

"$PY" "$REPO/tests/support/dns_server.py" --zone "$WORK/zone.json" < /dev/null > "$WORK/dns.out" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/dns.out" ] && break; sleep 0.1; done
DNS_PORT="$(python3 -c "import json;print(json.load(open('$WORK/dns.out'))['port'])")"

echo "== webhook receiver"
cat > "$WORK/receiver.py" <<'EOF'
import http.server, json, sys, threading
count, first, lock = 0, None, threading.Lock()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive: the relay reuses its connections
    def do_POST(self):
        global count, first
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with lock:
            count += 1
            if first is None:
                first = body
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        with lock:
            out = json.dumps({"count": count, "first": json.loads(first) if first else None}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
EOF
python3 "$WORK/receiver.py" > "$WORK/receiver.port" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/receiver.port" ] && break; sleep 0.1; done
RECEIVER="127.0.0.1:$(cat "$WORK/receiver.port")"
received() { curl -s "http://$RECEIVER/" | python3 -c 'import json,sys;print(json.load(sys.stdin)["count"])'; }

echo "== mailmux (MX, verify_auth on)"
export MAILMUX_STORAGE__DATA_DIR="$MM_DIR"
"$MAILMUX" domain add --tenant "$TENANT" --domain inbound.test --verified --inbound > /dev/null
unset MAILMUX_STORAGE__DATA_DIR
MAILMUX_DELIVERY__DNS_SERVERS="[\"127.0.0.1:$DNS_PORT\"]" \
MAILMUX_WEBHOOKS__ALLOWED_NETWORKS='["127.0.0.0/8"]' \
MAILMUX_SMTP__MX_RATE_PER_MINUTE=0 \
    start_mailmux "$MM_DIR"
MX="$(python3 -c "import json;print(json.load(open('$MM_DIR/listeners.json'))['mx'])")"
api() { # METHOD PATH [BODY]
    curl -sf -X "$1" -H "Authorization: Bearer bench-token" -H 'Content-Type: application/json' \
        ${3:+--data "$3"} "http://$ADMIN$2"
}
WEBHOOK="$(api POST "/api/tenants/$TENANT/webhooks" "{\"url\": \"http://$RECEIVER/hook\", \"kind\": \"inbound\"}" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')"
api POST "/api/tenants/$TENANT/addresses" \
    "{\"address\": \"*@inbound.test\", \"action\": \"webhook\", \"webhook_id\": \"$WEBHOOK\"}" > /dev/null

mx_load() { # MESSAGES_PER_SESSION
    "$LOADGEN" --addr "$MX" --sessions "$SESSIONS" --messages "$1" --size "$SIZE" \
        --from alice@sender.test --to user@inbound.test --message-file "$WORK/message.eml"
}
wait_webhooks() { # TOTAL
    while [ "$(received)" -lt "$1" ]; do sleep 0.05; done
}

# Warm-up (connections, caches, page cache), not measured.
mx_load 10 > /dev/null
WARM=$((SESSIONS * 10))
wait_webhooks "$WARM"

PER_SESSION=$((MESSAGES / SESSIONS))
TOTAL=$((PER_SESSION * SESSIONS))
t0="$(now)"
LAT="$(mx_load "$PER_SESSION")"
wait_webhooks $((WARM + TOTAL))
t2="$(now)"
E2E="$(rate "$TOTAL" "$t0" "$t2")"
RSS="$(peak_rss_mib "$MAILMUX_PID")"
FIRST="$(curl -s "http://$RECEIVER/")"

python3 - "$SESSIONS" "$TOTAL" "$SIZE" "$LAT" "$E2E" "$RSS" "$FIRST" <<'EOF'
import json, sys
sessions, total, size, lat, e2e, rss, first = sys.argv[1:]
lat, first = json.loads(lat), json.loads(first)["first"]
print()
print(f"MX: {sessions} sessions, {total} DKIM-signed messages of {size} bytes, SPF+DKIM+DMARC+ARC "
      f"checked, durable, handed to a webhook receiver")
print("| accepted msg/s | end-to-end msg/s (webhooks received) | p50 ms | p99 ms | refused | peak RSS MiB |")
print("|---|---|---|---|---|---|")
print(f"| {lat['accepted_per_s']:.0f} | {float(e2e):.0f} | {lat['p50_ms']} | {lat['p99_ms']} | "
      f"{lat['refused']} | {rss} |")
print("verdicts of one payload:", json.dumps(first.get("verdicts") if first else None))
EOF
