#!/usr/bin/env bash
# A private PostgreSQL cluster for tests, from Debian's binaries, on 127.0.0.1 only.
#
#   pg.sh start DIR      initdb in DIR/data, start on a free port, print
#                        postgres://postgres@127.0.0.1:PORT/postgres (also kept in DIR/url)
#   pg.sh stop DIR       stop the cluster in DIR (the directory is left in place)
#   pg.sh watch PID DIR  wait until process PID is gone, then stop the cluster and remove DIR:
#                        the test process starts this beside its cluster so that the cluster
#                        never outlives it, however it ends (records PID in DIR/owner.pid)
#
# Trust authentication, no TLS, fsync off: a throwaway cluster for tests, never for data.
# PG_DURABLE=1 keeps fsync and synchronous_commit on (the benchmarks measure durable commits).
# As root, initdb refuses to run, so the cluster belongs to the `postgres` user (created by
# Debian's postgresql package) and DIR is handed to it.
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }

pg_bindir() {
    local d
    if [ -n "${MAILMUX_PG_BINDIR:-}" ]; then echo "$MAILMUX_PG_BINDIR"; return; fi
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
    d="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"
    [ -x "$d/initdb" ] && { echo "$d"; return; }
    return 1
}

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    # Bind port 0 and report what the kernel chose; the race until postgres binds it is closed by
    # retrying the start on failure.
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    else
        echo $(( 20000 + RANDOM % 40000 ))
    fi
}

cmd_start() {
    local dir="$1" bin port attempt
    bin="$(pg_bindir)" || die "PostgreSQL server binaries not found (apt-get install postgresql)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [ -e "$dir/data/PG_VERSION" ] && die "$dir already holds a cluster"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' user (apt-get install postgresql)"
        chown postgres: "$dir"
        chmod 700 "$dir"
        runuser -u postgres -- test -w "$dir" \
            || die "user postgres cannot write $dir (is a parent directory closed to it? set TMPDIR)"
    fi
    # The caller's working dir may be closed to `postgres` (a clone under /root): work from DIR.
    cd "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    cat >>"$dir/data/postgresql.conf" <<CONF

# --- mailmux test cluster ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 300
log_min_messages = warning
CONF
    if [ "${PG_DURABLE:-0}" = 1 ]; then
        # Benchmarks: durable as in production (fsync and synchronous_commit stay on).
        echo "shared_buffers = 256MB" >>"$dir/data/postgresql.conf"
    else
        printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n' \
            >>"$dir/data/postgresql.conf"
    fi
    for attempt in 1 2 3 4 5 6 7 8; do
        port="$(free_port)"
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port" start >/dev/null 2>&1; then
            echo "$port" >"$dir/port"
            echo "postgres://postgres@127.0.0.1:$port/postgres" >"$dir/url"
            [ "$(id -u)" = 0 ] && chown postgres: "$dir/port" "$dir/url"
            cat "$dir/url"
            return 0
        fi
        # Port taken between our probe and postgres' bind: try another.
        grep -q 'could not bind\|Address already in use' "$dir/server.log" 2>/dev/null \
            || { tail -20 "$dir/server.log" >&2 || true; die "pg_ctl start failed"; }
    done
    die "no free port after $attempt attempts"
}

cmd_stop() {
    local dir="$1" bin
    bin="$(pg_bindir)" || die "PostgreSQL server binaries not found"
    [ -f "$dir/data/postmaster.pid" ] || return 0
    cd /
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 20 stop >/dev/null 2>&1 \
        || as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 20 stop >/dev/null 2>&1 \
        || true
}

cmd_watch() {
    local pid="$1" dir="$2"
    echo "$pid" >"$dir/owner.pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 1; done
    cmd_stop "$dir"
    rm -rf "$dir"
}

case "${1:-}" in
    start) [ $# -eq 2 ] || die "usage: pg.sh start DIR"; cmd_start "$2" ;;
    stop) [ $# -eq 2 ] || die "usage: pg.sh stop DIR"; cmd_stop "$2" ;;
    watch) [ $# -eq 3 ] || die "usage: pg.sh watch PID DIR"; cmd_watch "$2" "$3" ;;
    *) die "usage: pg.sh start DIR | stop DIR | watch PID DIR" ;;
esac
