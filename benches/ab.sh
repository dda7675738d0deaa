#!/usr/bin/env bash
# A/B of two mailmux binaries on the spine path: mailmux CPU per message and end-to-end msg/s,
# the two binaries alternating ROUNDS times, each on a fresh data dir, relaying to Postfix's
# smtp-sink through the smarthost transport (DKIM off, 20 sessions, 4000 × 10 KiB, durable).
# Throughput on this 2-core VM moves ±10 % from run to run (client, relay and sink share the
# cores); CPU per message, alternated, shows a few percent.
#
#   bash benches/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]      (default 3 rounds)
#
# Build the two binaries first, e.g. the old one from a `git worktree` of the earlier commit
# (`cargo build --release --bin mailmux`, then copy target/release/mailmux aside).
set -euo pipefail

OLD="$1"
NEW="$2"
ROUNDS="${3:-3}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One measured run of binary $1 labelled $2.
run_one() {
    local bin="$1" label="$2" work sink_port sink_pid tenant pid sub admin c0 c1 t0 t1
    work="$(mktemp -d /tmp/mailmux-ab.XXXXXX)"
    chmod 755 "$work"
    sink_port="$(free_port)"
    smtp-sink -u nobody -c "127.0.0.1:$sink_port" 1024 > /dev/null &
    sink_pid=$!
    export MAILMUX_STORAGE__DATA_DIR="$work/mm"
    mkdir -p "$work/mm"
    # The CLI never creates a database (only `migrate` and `serve` do).
    "$bin" migrate > /dev/null
    tenant="$("$bin" tenant create --name bench --tier enterprise |
        python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')"
    "$bin" domain add --tenant "$tenant" --domain bench.test --verified > /dev/null
    "$bin" tenant update --tenant "$tenant" --feature dkim_signing=false > /dev/null
    MAILMUX_SMTP__SUBMISSION=127.0.0.1:0 MAILMUX_SMTP__SUBMISSION_TLS=127.0.0.1:0 \
    MAILMUX_SMTP__MX=127.0.0.1:0 MAILMUX_ADMIN__LISTEN=127.0.0.1:0 \
    MAILMUX_ADMIN__TOKEN=bench-token \
    MAILMUX_SMTP__TRUSTED_NETWORKS='["127.0.0.0/8"]' MAILMUX_SMTP__DEFAULT_TENANT="$tenant" \
    MAILMUX_DELIVERY__TRANSPORT=smarthost MAILMUX_DELIVERY__SMARTHOST="127.0.0.1:$sink_port" \
    MAILMUX_DELIVERY__SMARTHOST_TLS=none MAILMUX_DELIVERY__MAX_CONNECTIONS_PER_DESTINATION=20 \
    RUST_LOG=warn "$bin" serve > "$work/serve.log" 2>&1 &
    pid=$!
    unset MAILMUX_STORAGE__DATA_DIR
    for _ in $(seq 100); do [ -f "$work/mm/listeners.json" ] && break; sleep 0.1; done
    sub="$(python3 -c "import json;print(json.load(open('$work/mm/listeners.json'))['submission'])")"
    admin="$(python3 -c "import json;print(json.load(open('$work/mm/listeners.json'))['admin'])")"
    depth() {
        curl -s -H "Authorization: Bearer bench-token" "http://$admin/metrics" |
            awk '/^mailmux_queue_depth /{print $2}'
    }
    cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$pid/stat"; }
    # Warm-up, not measured.
    smtp-source -s 4 -m 200 -l 10240 -d -f bench@bench.test -t user@sink.test "$sub"
    while [ "$(depth)" != "0" ]; do sleep 0.05; done
    c0="$(cpu_ms)"
    t0="$(date +%s.%N)"
    smtp-source -s 20 -m 4000 -l 10240 -d -f bench@bench.test -t user@sink.test "$sub"
    while [ "$(depth)" != "0" ]; do sleep 0.02; done
    t1="$(date +%s.%N)"
    c1="$(cpu_ms)"
    python3 -c "print('$label', 'cpu_ms_per_msg=%.3f' % (($c1 - $c0) / 4000), 'end_to_end_msg_s=%.0f' % (4000 / ($t1 - $t0)))"
    kill "$pid" "$sink_pid"
    wait "$pid" "$sink_pid" 2>/dev/null || true
    rm -rf "$work"
}

for _ in $(seq "$ROUNDS"); do
    run_one "$OLD" old
    run_one "$NEW" new
done
