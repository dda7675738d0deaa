#!/usr/bin/env bash
# mailmux vs Postfix, side by side on this machine, relaying to the same sink.
#
#   [DKIM=off] [DB=postgres] [ONLY_MAILMUX=1] bash benches/run.sh [SESSIONS] [MESSAGES] [SIZE]
#   (defaults: 20 4000 10240; DB=postgres: mailmux on a private durable Postgres cluster;
#   ONLY_MAILMUX=1: stop after mailmux's own run)
#
# Both relays are durable (mailmux: SQLite WAL with synchronous=FULL and group commit;
# Postfix: fsync of every queue file) and relay everything to one Postfix `smtp-sink` on
# loopback. Both are fed by the same `smtp-source` (plain SMTP from a trusted network, one
# connection per session, many messages per connection). Then mailmux alone is fed by the
# Rust load generator (benches/loadgen.rs) for end-of-DATA→250 latency percentiles, in plain
# text and over STARTTLS + AUTH, and with DKIM signing on and off.
#
# Reported: accepted msgs/s (the client's wall time), end-to-end msgs/s (until the relay's
# queue is empty), p50/p99 end-of-DATA→250, peak RSS of mailmux, and bytes written to disk per
# message: by the mailmux process (/proc/PID/io write_bytes) and to the block device (every
# process: the Postgres server, Postfix's short-lived processes). Needs postfix (smtp-source,
# smtp-sink) and python3; runs as root (Postfix's own instance in a temp dir).
set -euo pipefail

SESSIONS="${1:-20}"
MESSAGES="${2:-4000}"
SIZE="${3:-10240}"
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export MAILMUX_STORAGE__DATA_DIR="$MM_DIR"
# DKIM=off measures the relay alone; DKIM=on (default) signs every message with RSA-2048.
if [ "${DKIM:-on}" = off ]; then
    "$MAILMUX" tenant update --tenant "$TENANT" --feature dkim_signing=false > /dev/null
fi
CRED="$("$MAILMUX" credential create --tenant "$TENANT")"
USER="$(echo "$CRED" | python3 -c 'import json,sys;print(json.load(sys.stdin)["username"])')"
PASS="$(echo "$CRED" | python3 -c 'import json,sys;print(json.load(sys.stdin)["password"])')"
unset MAILMUX_STORAGE__DATA_DIR
start_mailmux "$MM_DIR"

# Warm-up (first connections, page cache), not measured.
smtp-source -s 4 -m 200 -l "$SIZE" -d -f bench@bench.test -t user@sink.test "$SUBMISSION"
wait_mailmux_drained

sync
w0="$(write_bytes "$MAILMUX_PID")"
d0="$(device_written)"
t0="$(now)"
smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -d -f bench@bench.test -t user@sink.test "$SUBMISSION"
t1="$(now)"
wait_mailmux_drained
t2="$(now)"
sync
MM_WRITTEN="$(( ($(write_bytes "$MAILMUX_PID") - w0) / MESSAGES ))"
MM_DEVICE="$(( ($(device_written) - d0) / MESSAGES ))"
MM_ACCEPT="$(rate "$MESSAGES" "$t0" "$t1")"
MM_E2E="$(rate "$MESSAGES" "$t0" "$t2")"
echo "mailmux: accepted $MM_ACCEPT msg/s, end-to-end $MM_E2E msg/s;" \
    "written per message: $MM_WRITTEN bytes by mailmux, $MM_DEVICE bytes to the device"
if [ "${ONLY_MAILMUX:-0}" = 1 ]; then exit 0; fi

# ---------------------------------------------------------------------------------------------
echo "== postfix"
PF="$WORK/postfix"
PF_PORT="$(free_port)"
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cat > "$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$SINK_PORT
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
default_destination_concurrency_limit = 20
smtp_destination_concurrency_limit = 20
maillog_file_prefixes = $PF
maillog_file = $PF/maillog
EOF
# Debian's master.cf, without chroot (the temp queue dir has no chroot tree) and with smtpd on
# our port.
awk -v port="$PF_PORT" '
    /^smtp +inet/ { print "127.0.0.1:" port " inet n - n - - smtpd"; next }
    /^[a-z]/ && NF >= 8 { $5 = "n" }
    { print }
' /etc/postfix/master.cf > "$PF/etc/master.cf"
grep -q '^postlog' "$PF/etc/master.cf" || echo "postlog unix-dgram n - n - 1 postlogd" >> "$PF/etc/master.cf"
# Postfix prints its errors only to a terminal (else to syslog, absent here): `script` gives it one.
script -qec "postfix -c $PF/etc check" /dev/null
script -qec "postfix -c $PF/etc start" /dev/null
sleep 1
pf_queue_empty() { [ -z "$(find "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" "$PF/queue/maildrop" -type f 2>/dev/null | head -n1)" ]; }
wait_postfix_drained() { until pf_queue_empty; do sleep 0.05; done; }

smtp-source -s 4 -m 200 -l "$SIZE" -d -f bench@bench.test -t user@sink.test "127.0.0.1:$PF_PORT"
wait_postfix_drained

sync
d0="$(device_written)"
t0="$(now)"
smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -d -f bench@bench.test -t user@sink.test "127.0.0.1:$PF_PORT"
t1="$(now)"
wait_postfix_drained
t2="$(now)"
sync
PF_DEVICE="$(( ($(device_written) - d0) / MESSAGES ))"
PF_ACCEPT="$(rate "$MESSAGES" "$t0" "$t1")"
PF_E2E="$(rate "$MESSAGES" "$t0" "$t2")"
echo "postfix: accepted $PF_ACCEPT msg/s, end-to-end $PF_E2E msg/s; written per message: $PF_DEVICE bytes to the device"
PF_LAT="$("$LOADGEN" --addr "127.0.0.1:$PF_PORT" --sessions "$SESSIONS" --messages 100 --size "$SIZE")"
wait_postfix_drained
postfix -c "$PF/etc" stop >/dev/null 2>&1 || true

# ---------------------------------------------------------------------------------------------
echo "== mailmux latency (loadgen)"
MM_LAT_PLAIN="$("$LOADGEN" --addr "$SUBMISSION" --sessions "$SESSIONS" --messages 200 --size "$SIZE" \
    --from bench@bench.test --to user@sink.test)"
wait_mailmux_drained
MM_LAT_TLS="$("$LOADGEN" --addr "$SUBMISSION" --sessions "$SESSIONS" --messages 200 --size "$SIZE" \
    --from bench@bench.test --to user@sink.test --auth "$USER:$PASS")"
wait_mailmux_drained
MM_RSS="$(peak_rss_mib "$MAILMUX_PID")"

python3 - "$SESSIONS" "$MESSAGES" "$SIZE" "$MM_ACCEPT" "$MM_E2E" "$PF_ACCEPT" "$PF_E2E" \
    "$MM_LAT_PLAIN" "$MM_LAT_TLS" "$PF_LAT" "$MM_RSS" "$MM_WRITTEN" "$MM_DEVICE" "$PF_DEVICE" \
    "${DB:-sqlite}" <<'EOF'
import json, sys
(sessions, messages, size, mm_a, mm_e, pf_a, pf_e, lat_plain, lat_tls, pf_lat, rss,
 mm_written, mm_device, pf_device, db) = sys.argv[1:]
lat_plain, lat_tls, pf_lat = json.loads(lat_plain), json.loads(lat_tls), json.loads(pf_lat)
mm_a, mm_e, pf_a, pf_e = map(float, (mm_a, mm_e, pf_a, pf_e))
print()
print(f"{sessions} sessions, {messages} messages of {size} bytes, durable, relayed to smtp-sink; mailmux on {db}")
print(f"| | accepted msg/s | end-to-end msg/s | p50 ms | p99 ms |")
print(f"|---|---|---|---|---|")
print(f"| mailmux (smtp-source, plain) | {mm_a:.0f} | {mm_e:.0f} | | |")
print(f"| Postfix (smtp-source, plain) | {pf_a:.0f} | {pf_e:.0f} | {pf_lat['p50_ms']} | {pf_lat['p99_ms']} |")
print(f"| mailmux (loadgen, plain) | {lat_plain['accepted_per_s']:.0f} | | {lat_plain['p50_ms']} | {lat_plain['p99_ms']} |")
print(f"| mailmux (loadgen, STARTTLS+AUTH) | {lat_tls['accepted_per_s']:.0f} | | {lat_tls['p50_ms']} | {lat_tls['p99_ms']} |")
print(f"ratio mailmux/Postfix: accepted {mm_a/pf_a:.2f}x, end-to-end {mm_e/pf_e:.2f}x; mailmux peak RSS {rss} MiB")
size = int(size)
print(f"written per message: mailmux {int(mm_written)} bytes ({int(mm_written)/size:.2f}x the size; "
      f"device {int(mm_device)} bytes, {int(mm_device)/size:.2f}x), Postfix device {int(pf_device)} bytes "
      f"({int(pf_device)/size:.2f}x)")
EOF
