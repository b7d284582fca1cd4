#!/usr/bin/env bash
# Pass-through benchmark: pgbench -S (select-only) in simple, extended and prepared modes
# against PostgreSQL directly, pgbouncer (session pooling) and pgcloak, in one run.
#
# Target (DESIGN.md): pgcloak >= 1.0x pgbouncer in every mode, with the ratio to direct
# reported alongside, plus pgcloak's own CPU time per transaction (stable on a noisy machine).
#
# The contenders are interleaved within every round (the order rotates each round) and the
# report gives the median tps of each and the median of the per-round ratios.
#
# It starts its own throwaway cluster, pgbouncer and pgcloak on free loopback ports and
# removes everything on exit. Needs PostgreSQL and pgbouncer installed (Debian packages);
# run as root (server processes run as the postgres user) or as a user that can run initdb.
#
# Usage: benches/pgbench.sh            (ROUNDS=5 DURATION=10 CLIENTS=8 SCALE=10 by default)
#        ROUNDS=3 DURATION=5 benches/pgbench.sh
#        PGCLOAK_BIN=target/release/pgcloak benches/pgbench.sh   (skip the release build)
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
MODES=${MODES:-"simple extended prepared"}
PASSWORD="bench-Secret-pw1"

cd "$(dirname "$0")/.."
REPO=$(pwd)

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
command -v pgbouncer >/dev/null || { echo "pgbouncer is not installed (apt-get install pgbouncer)" >&2; exit 1; }

if [ -z "${PGCLOAK_BIN:-}" ]; then
    cargo build --release --bin pgcloak >&2
    PGCLOAK_BIN="$REPO/target/release/pgcloak"
fi

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

WORK=$(mktemp -d /tmp/pgcloak-bench-XXXXXX)
chmod 755 "$WORK"
PGCLOAK_PID=""

cleanup() {
    set +e
    [ -n "$PGCLOAK_PID" ] && kill "$PGCLOAK_PID" 2>/dev/null && wait "$PGCLOAK_PID" 2>/dev/null
    [ -f "$WORK/bouncer/pgbouncer.pid" ] && kill "$(cat "$WORK/bouncer/pgbouncer.pid")" 2>/dev/null
    [ -f "$WORK/data/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" stop -m immediate -D "$WORK/data" -s >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- PostgreSQL ------------------------------------------------------------------------
PG_PORT=$(free_port)
mkdir "$WORK/data" "$WORK/sock" "$WORK/bouncer"
echo "$PASSWORD" >"$WORK/pwfile"
touch "$WORK/postgres.log"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$WORK/data" "$WORK/sock" "$WORK/bouncer" "$WORK/pwfile" "$WORK/postgres.log"
fi
chmod 700 "$WORK/data"
as_postgres "$PG_BIN/initdb" -D "$WORK/data" --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$WORK/pwfile" -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$WORK/data/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
shared_buffers = 256MB
CONF
as_postgres "$PG_BIN/pg_ctl" start -w -s -D "$WORK/data" -l "$WORK/postgres.log"

psql_admin() { "$PG_BIN/psql" -h "$WORK/sock" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_admin -d postgres -c "CREATE ROLE bench LOGIN PASSWORD '$PASSWORD'"
psql_admin -d postgres -c "CREATE DATABASE bench OWNER bench"
export PGPASSWORD=$PASSWORD
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U bench -i -s "$SCALE" -q bench >/dev/null 2>&1

# --- pgbouncer (refuses root: its files live in a postgres-owned dir) ---------------------
BOUNCER_PORT=$(free_port)
cat >"$WORK/bouncer/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/bouncer/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $WORK/bouncer/pgbouncer.log
pidfile = $WORK/bouncer/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
INI
echo "\"bench\" \"$PASSWORD\"" >"$WORK/bouncer/userlist.txt"
if [ "$(id -u)" = 0 ]; then chown -R postgres: "$WORK/bouncer"; fi
as_postgres pgbouncer -d -q "$WORK/bouncer/pgbouncer.ini"

# --- pgcloak ---------------------------------------------------------------------------
PGCLOAK_PORT=$(free_port)
cat >"$WORK/pgcloak.yaml" <<YAML
listen: 127.0.0.1:$PGCLOAK_PORT
instance_id: 1
upstream: { host: 127.0.0.1, port: $PG_PORT, tls: disable }
tls: { mode: disabled }
auth: { mode: relay }
max_connections: 100
log: { format: text, level: warn }
YAML
"$PGCLOAK_BIN" serve --config "$WORK/pgcloak.yaml" 2>"$WORK/pgcloak.log" &
PGCLOAK_PID=$!

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listening on port $1" >&2
    cat "$WORK/pgcloak.log" "$WORK/bouncer/pgbouncer.log" >&2 || true
    exit 1
}
wait_port "$BOUNCER_PORT"
wait_port "$PGCLOAK_PORT"

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PGCLOAK_PID/stat"; }

# Runs pgbench against a port; prints "tps transactions failed".
run_pgbench() {
    local port=$1 mode=$2 out
    out=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U bench -n -S -M "$mode" \
        -c "$CLIENTS" -j "$THREADS" -T "$DURATION" bench 2>&1) || { echo "$out" >&2; exit 1; }
    local tps txns failed
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    echo "$tps $txns ${failed:-0}"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

RESULTS="$WORK/rounds.tsv"
: >"$RESULTS"
TARGETS=(direct pgbouncer pgcloak)
declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT [pgcloak]=$PGCLOAK_PORT)

for mode in $MODES; do
    for round in $(seq 1 "$ROUNDS"); do
        declare -A TPS=()
        cpu_us=""
        tps="" txns="" failed=""
        # Rotate the order every round so no contender always runs first or last.
        for i in 0 1 2; do
            target=${TARGETS[$(((i + round) % 3))]}
            [ "$target" = pgcloak ] && before=$(cpu_ticks)
            read -r tps txns failed < <(run_pgbench "${PORT[$target]}" "$mode") || true
            if [ -z "${tps:-}" ] || [ -z "${txns:-}" ]; then
                echo "$target $mode round $round: pgbench failed" >&2
                exit 1
            fi
            if [ "$target" = pgcloak ]; then
                after=$(cpu_ticks)
                cpu_us=$(awk -v d=$((after - before)) -v t="$txns" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d * 1e6 / hz / t }')
            fi
            if [ "$failed" != 0 ]; then
                echo "$target $mode round $round: $failed failed transactions" >&2
                exit 1
            fi
            TPS[$target]=$tps
            echo "mode=$mode round=$round target=$target tps=$tps txns=$txns" >&2
        done
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "${TPS[direct]}" "${TPS[pgbouncer]}" "${TPS[pgcloak]}" "$cpu_us" >>"$RESULTS"
        unset TPS
    done
done

col() { awk -F'\t' -v m="$1" -v c="$2" '$1 == m { print $c }' "$RESULTS"; }
ratio() { awk -F'\t' -v m="$1" -v a="$2" -v b="$3" '$1 == m { printf "%.3f\n", $a / $b }' "$RESULTS"; }

echo
echo "## pgbench -S, scale $SCALE, $CLIENTS clients, ${DURATION}s x $ROUNDS interleaved rounds per mode"
echo
echo "Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); $("$PG_BIN/postgres" --version); $(pgbouncer --version | head -1)"
echo
echo "| mode | direct tps | pgbouncer tps | pgcloak tps | pgcloak/pgbouncer | pgcloak/direct | pgcloak CPU µs/txn |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for mode in $MODES; do
    printf '| %s | %.0f | %.0f | %.0f | %.2f | %.2f | %.1f |\n' "$mode" \
        "$(col "$mode" 3 | median)" "$(col "$mode" 4 | median)" "$(col "$mode" 5 | median)" \
        "$(ratio "$mode" 5 4 | median)" "$(ratio "$mode" 5 3 | median)" "$(col "$mode" 6 | median)"
done
echo
echo "Medians over rounds; ratios are medians of per-round ratios. Per-round data:"
echo
echo '```'
printf 'mode\tround\tdirect\tpgbouncer\tpgcloak\tpgcloak_cpu_us_per_txn\n'
cat "$RESULTS"
echo '```'
