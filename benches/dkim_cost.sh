#!/usr/bin/env bash
# What DKIM signing costs the relay: one mailmux, the same load with signing off and on,
# alternated for several rounds so that both modes see the same machine.
#
#   [KEY_TYPE=ed25519] bash benches/dkim_cost.sh [ROUNDS] [MESSAGES] [SIZE] [SESSIONS]
#                                                  (defaults: RSA-2048; 3 4000 10240 20)
#
# Each run: `smtp-source` sends MESSAGES messages of SIZE bytes over SESSIONS connections;
# end-to-end msg/s is MESSAGES / the time until mailmux's queue is empty. Signing is switched
# through the CLI (`tenant update --feature dkim_signing=…`), which the relay sees within a
# second. Also reported per message: mailmux's own CPU time, and how busy the machine's cores
# were (client, relay and sink share them). Needs postfix (smtp-source, smtp-sink), python3.
set -euo pipefail

ROUNDS="${1:-3}"
MESSAGES="${2:-4000}"
SIZE="${3:-10240}"
SESSIONS="${4:-20}"
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_mailmux "$MM_DIR"
signing() { # on|off
    local value=true
    [ "$1" = off ] && value=false
    MAILMUX_STORAGE__DATA_DIR="$MM_DIR" "$MAILMUX" tenant update --tenant "$TENANT" \
        --feature "dkim_signing=$value" > /dev/null
    sleep 1.2 # the relay reads tenants through a cache of at most a second
}

# Warm-up (first connections, page cache, signer built), not measured.
smtp-source -s 4 -m 400 -l "$SIZE" -d -f bench@bench.test -t user@sink.test "$SUBMISSION"
wait_mailmux_drained

RESULTS="$WORK/results"
: > "$RESULTS"
for round in $(seq "$ROUNDS"); do
    for mode in off on; do
        signing "$mode"
        cpu0="$(cpu_ms "$MAILMUX_PID")"
        read -r busy0 total0 <<< "$(machine_jiffies)"
        t0="$(now)"
        smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -d -f bench@bench.test \
            -t user@sink.test "$SUBMISSION"
        wait_mailmux_drained
        t1="$(now)"
        cpu1="$(cpu_ms "$MAILMUX_PID")"
        read -r busy1 total1 <<< "$(machine_jiffies)"
        e2e="$(rate "$MESSAGES" "$t0" "$t1")"
        echo "round $round signing $mode: $e2e msg/s" >&2
        echo "$mode $e2e $(python3 -c "print(($cpu1-$cpu0)/$MESSAGES, ($busy1-$busy0)/($total1-$total0))")" >> "$RESULTS"
    done
done

python3 - "$RESULTS" "$MESSAGES" "$SIZE" "$SESSIONS" <<'PY'
import statistics, sys
path, messages, size, sessions = sys.argv[1:]
runs = {"off": [], "on": []}
for line in open(path):
    mode, rate, cpu, busy = line.split()
    runs[mode].append((float(rate), float(cpu), float(busy)))
print()
print(f"{len(runs['off'])} rounds of {messages} messages of {size} bytes, {sessions} sessions, "
      "signing off and on alternately")
print("| signing | end-to-end msg/s (each run) | median msg/s | mailmux CPU ms/msg | cores busy |")
print("|---|---|---|---|---|")
median = {}
for mode in ("off", "on"):
    rates = [r for r, _, _ in runs[mode]]
    median[mode] = statistics.median(rates)
    cpu = statistics.median(c for _, c, _ in runs[mode])
    busy = statistics.median(b for _, _, b in runs[mode])
    print(f"| {mode} | {', '.join(f'{r:.0f}' for r in rates)} | {median[mode]:.0f} | "
          f"{cpu:.3f} | {busy:.0%} |")
cost = 1 - median["on"] / median["off"]
cpu_off = statistics.median(c for _, c, _ in runs["off"])
cpu_on = statistics.median(c for _, c, _ in runs["on"])
print(f"signing costs {cost:.1%} of end-to-end throughput; "
      f"{cpu_on - cpu_off:.3f} ms of mailmux CPU per message")
PY
