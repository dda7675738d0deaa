# Shared by the bench scripts (run.sh, dkim_cost.sh): a work dir cleaned up on exit, the
# release build, Postfix's smtp-sink as the one receiver, and one mailmux relaying to it for a
# bench tenant (enterprise, no limits) with a DKIM key on bench.test (RSA-2048, or Ed25519 with
# KEY_TYPE=ed25519). Source it after
# setting SESSIONS, MESSAGES and SIZE.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d /tmp/mailmux-bench.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -d "$WORK/postfix/etc" ] && postfix -c "$WORK/postfix/etc" stop >/dev/null 2>&1 || true
    [ -n "${PG_STOP:-}" ] && bash "$REPO/tests/support/pg.sh" stop "$PG_STOP" >/dev/null 2>&1 || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
rate() { python3 -c "print(round($1/($3-$2),1))"; }

echo "== building (release)"
cd "$REPO"
cargo build --release --bin mailmux -q
LOADGEN="$(cargo bench --bench loadgen --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n1)"
MAILMUX="${CARGO_TARGET_DIR:-$REPO/target}/release/mailmux"

echo "== sink: Postfix smtp-sink"
SINK_PORT="$(free_port)"
smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1024 > "$WORK/sink.count" &
PIDS+=($!)
sleep 0.5

start_mailmux() { # $1 = data dir
    MAILMUX_STORAGE__DATA_DIR="$1" \
    MAILMUX_SMTP__SUBMISSION=127.0.0.1:0 MAILMUX_SMTP__SUBMISSION_TLS=127.0.0.1:0 \
    MAILMUX_SMTP__MX=127.0.0.1:0 MAILMUX_ADMIN__LISTEN=127.0.0.1:0 \
    MAILMUX_ADMIN__TOKEN=bench-token \
    MAILMUX_SMTP__TRUSTED_NETWORKS='["127.0.0.0/8"]' MAILMUX_SMTP__DEFAULT_TENANT="$TENANT" \
    MAILMUX_DELIVERY__TRANSPORT=smarthost MAILMUX_DELIVERY__SMARTHOST="127.0.0.1:$SINK_PORT" \
    MAILMUX_DELIVERY__SMARTHOST_TLS=none \
    MAILMUX_DELIVERY__MAX_CONNECTIONS_PER_DESTINATION=20 \
    RUST_LOG=warn "$MAILMUX" serve > "$1/serve.log" 2>&1 &
    MAILMUX_PID=$!
    PIDS+=("$MAILMUX_PID")
    for _ in $(seq 100); do [ -f "$1/listeners.json" ] && break; sleep 0.1; done
    SUBMISSION="$(python3 -c "import json;print(json.load(open('$1/listeners.json'))['submission'])")"
    ADMIN="$(python3 -c "import json;print(json.load(open('$1/listeners.json'))['admin'])")"
}
queue_depth() { # mailmux queue depth from /metrics (counted from the store)
    curl -s -H "Authorization: Bearer bench-token" "http://$ADMIN/metrics" |
        awk '/^mailmux_queue_depth /{print $2}'
}
wait_mailmux_drained() {
    while [ "$(queue_depth)" != "0" ]; do sleep 0.05; done
}
peak_rss_mib() { awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status"; }

MM_DIR="$WORK/mailmux"
mkdir -p "$MM_DIR"
# DB=postgres: mailmux on a private Postgres cluster, durable (fsync, synchronous_commit on),
# as several nodes would share it; default SQLite in the data dir.
if [ "${DB:-sqlite}" = postgres ]; then
    mkdir -p "$WORK/pg"
    export MAILMUX_STORAGE__DATABASE_URL
    MAILMUX_STORAGE__DATABASE_URL="$(PG_DURABLE=1 bash "$REPO/tests/support/pg.sh" start "$WORK/pg")"
    PG_STOP="$WORK/pg"
fi
export MAILMUX_STORAGE__DATA_DIR="$MM_DIR"
# The CLI never creates a database (only `migrate` and `serve` do).
"$MAILMUX" migrate > /dev/null
TENANT="$("$MAILMUX" tenant create --name bench --tier enterprise | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')"
# KEY_TYPE=ed25519 for an Ed25519 key instead of RSA-2048.
"$MAILMUX" domain add --tenant "$TENANT" --domain bench.test --verified \
    --key-type "${KEY_TYPE:-rsa}" > /dev/null
unset MAILMUX_STORAGE__DATA_DIR

# mailmux's CPU time so far, in milliseconds (user + system, from /proc/PID/stat).
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$1/stat"; }
# The machine's busy and total jiffies so far (all cores, from /proc/stat).
machine_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

# Bytes process PID has caused to be written to storage so far (/proc/PID/io write_bytes).
write_bytes() { awk '/^write_bytes/{print $2}' "/proc/$1/io"; }
# Bytes written to the block device holding $WORK so far (every process: the database server,
# Postfix's short-lived processes), from /sys/block/DEV/stat (sectors of 512 bytes).
device_written() {
    local dev
    dev="$(lsblk -no PKNAME "$(df --output=source "$WORK" | tail -n1)" 2>/dev/null || true)"
    [ -n "$dev" ] || dev="$(basename "$(df --output=source "$WORK" | tail -n1)")"
    awk '{printf "%.0f\n", $7 * 512}' "/sys/block/$dev/stat"
}
