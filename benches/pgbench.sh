#!/usr/bin/env bash
# Pass-through benchmark: pgbench -S (select-only) in simple, extended and prepared modes
# against PostgreSQL directly, pgbouncer (session pooling), pgcloak as a pure relay (no
# policy) and pgcloak WITH A POLICY IN FORCE (a protected table in the benchmarked
# database, a catalog connection configured: what a deployment runs), in one run.
# The policy row is the main one; the relay row is the reference for "cost of the policy".
#
# Targets (issue 15): pgcloak with a policy >= 1.2x pgbouncer tps in every mode, CPU per
# transaction <= pgbouncer's and within 5% of the relay's; `pgbench -C -S` (mode "connect":
# a new connection per transaction) >= 0.9x pgbouncer.
#
# CPU µs per transaction is measured for every contender from /proc over each pgbench run
# (utime+stime, divided by the run's transactions): the proxy process (pgbouncer, pgcloak
# relay, pgcloak with policy), and PostgreSQL's own side ("server"), which is the postmaster
# plus all its children, live ones from /proc/<pid>/stat and exited ones from the
# postmaster's cutime+cstime (so short-lived backends of connect mode count too).
#
# The contenders are interleaved within every round (the order rotates each round) and the
# report gives the median tps of each and the median of the per-round ratios.
#
# It starts its own throwaway cluster, pgbouncer and pgcloak on free loopback ports and
# removes everything on exit. Needs PostgreSQL and pgbouncer installed (Debian packages);
# run as root (server processes run as the postgres user) or as a user that can run initdb.
#
# Encrypted mode (MODES=encrypted, or add it to MODES): a custom script, INSERT of three
# values plus SELECT by deterministic equality, on a table whose 3 columns are encrypted
# (2 deterministic, 1 randomized) through the pgcloak with a policy, against the same script
# on an identical plaintext table through that pgcloak, through pgbouncer and directly.
# Targets: encrypted >= 0.85x plaintext-through-pgcloak, plaintext-through-pgcloak >= 0.8x
# direct; the pgbouncer row shows what the extra hop alone costs on this machine.
# ENC_PROTOCOL (default prepared) is the pgbench -M mode of that script; each contender has
# its own table, preloaded alike.
#
# Usage: benches/pgbench.sh            (ROUNDS=5 DURATION=10 CLIENTS=8 SCALE=10 by default,
#                                       MODES="simple extended prepared connect encrypted")
#        ROUNDS=3 DURATION=5 benches/pgbench.sh
#        MODES=encrypted benches/pgbench.sh
#        MODES=connect CONNECT_CLIENTS=4 benches/pgbench.sh
#        PGCLOAK_BIN=target/release/pgcloak benches/pgbench.sh   (skip the release build)
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
MODES=${MODES:-"simple extended prepared connect encrypted"}
CONNECT_CLIENTS=${CONNECT_CLIENTS:-$CLIENTS}
ENC_PROTOCOL=${ENC_PROTOCOL:-prepared}
ENC_ROWS=${ENC_ROWS:-50000}
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
ENC_PID=""

cleanup() {
    set +e
    [ -n "$PGCLOAK_PID" ] && kill "$PGCLOAK_PID" 2>/dev/null && wait "$PGCLOAK_PID" 2>/dev/null
    [ -n "$ENC_PID" ] && kill "$ENC_PID" 2>/dev/null && wait "$ENC_PID" 2>/dev/null
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

# --- the protected tables (people_enc is under the policy; the others are plain) ---------
# They exist from the start, so the pass-through rows run with a policy table in the database.
for t in people_direct people_bouncer people_plain; do
    psql_admin -d bench -c "CREATE TABLE $t (id bigserial PRIMARY KEY, phone text, email text, nid text);
        CREATE INDEX ON $t (phone); GRANT ALL ON $t, ${t}_id_seq TO bench;
        INSERT INTO $t (phone, email, nid) SELECT g, g, g FROM generate_series(1, $ENC_ROWS) g"
done
psql_admin -d bench -c "CREATE TABLE people_enc (id bigserial PRIMARY KEY, phone bytea, email bytea, nid bytea);
    CREATE INDEX ON people_enc (phone); GRANT ALL ON people_enc, people_enc_id_seq TO bench;"
psql_admin -d bench -c "ANALYZE"

umask 077
printf 'version: 1\nactive: 1\ndeterministic: 1\nkeys:\n  1: "%s"\n' "$(head -c 32 /dev/urandom | base64)" >"$WORK/master.keys"
umask 022
cat >"$WORK/policy.yaml" <<POLICY
version: 1
tables:
  public.people_enc:
    phone: { type: text, encryption: deterministic, access: { bench: plaintext } }
    nid: { type: text, encryption: deterministic, access: { bench: plaintext } }
    email: { type: text, access: { bench: plaintext } }
POLICY

# --- pgcloak: a pure relay (reference) and one with the policy in force -----------------
RELAY_PORT=$(free_port)
cat >"$WORK/pgcloak-relay.yaml" <<YAML
listen: 127.0.0.1:$RELAY_PORT
instance_id: 1
upstream: { host: 127.0.0.1, port: $PG_PORT, tls: disable }
tls: { mode: disabled }
auth: { mode: relay }
max_connections: 100
log: { format: text, level: warn }
YAML
"$PGCLOAK_BIN" serve --config "$WORK/pgcloak-relay.yaml" 2>"$WORK/pgcloak-relay.log" &
PGCLOAK_PID=$!

ENC_PORT=$(free_port)
cat >"$WORK/pgcloak-enc.yaml" <<YAML
listen: 127.0.0.1:$ENC_PORT
instance_id: 2
upstream: { host: 127.0.0.1, port: $PG_PORT, tls: disable }
tls: { mode: disabled }
auth: { mode: relay }
max_connections: 100
log: { format: text, level: warn }
policy: $WORK/policy.yaml
keys: { file: $WORK/master.keys }
catalog: { user: postgres, password_env: PGCLOAK_CATALOG_PASSWORD }
YAML
PGCLOAK_CATALOG_PASSWORD=$PASSWORD "$PGCLOAK_BIN" serve --config "$WORK/pgcloak-enc.yaml" 2>"$WORK/pgcloak-enc.log" &
ENC_PID=$!

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listening on port $1" >&2
    cat "$WORK"/pgcloak*.log "$WORK/bouncer/pgbouncer.log" >&2 || true
    exit 1
}
wait_port "$BOUNCER_PORT"
wait_port "$RELAY_PORT"
wait_port "$ENC_PORT"
# The policy pgcloak must really be in force: a statement on the protected table through it
# sees plaintext columns, and the table holds envelopes only (checked after the load below).
"$PG_BIN/psql" -h 127.0.0.1 -p "$ENC_PORT" -U bench -d bench -X -q -v ON_ERROR_STOP=1 \
    -c "SELECT count(*) FROM people_enc WHERE phone = '1'" >/dev/null

CLK_TCK=$(getconf CLK_TCK)
BOUNCER_PID=$(cat "$WORK/bouncer/pgbouncer.pid")
PM_PID=$(head -1 "$WORK/data/postmaster.pid")
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# PostgreSQL's whole CPU: the postmaster's own and reaped children's time, plus every live
# child's (a backend that exits moves its time from the second sum into the first).
# Live children are read first: a backend that exits between the two reads is counted twice
# (a small overcount) rather than not at all. Still approximate in connect mode.
server_ticks() {
    local pm live
    live=$(awk -v pm="$PM_PID" '$4 == pm { s += $14 + $15 } END { print s + 0 }' /proc/[0-9]*/stat 2>/dev/null || echo 0)
    pm=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$PM_PID/stat")
    echo $((pm + live))
}
per_txn() { awk -v d="$1" -v t="$2" -v hz="$CLK_TCK" 'BEGIN { if (t > 0) printf "%.2f", d * 1e6 / hz / t; else print "nan" }'; }

# Runs pgbench against a port; prints "tps transactions failed".
run_pgbench() {
    local port=$1 mode=$2 out args
    if [ "$mode" = connect ]; then
        args=(-S -C -M simple -c "$CONNECT_CLIENTS")
    else
        args=(-S -M "$mode" -c "$CLIENTS")
    fi
    out=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U bench -n "${args[@]}" \
        -j "$THREADS" -T "$DURATION" bench 2>&1) || { echo "$out" >&2; exit 1; }
    local tps txns failed
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    echo "$tps $txns ${failed:-0}"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

RESULTS="$WORK/rounds.tsv"
: >"$RESULTS"
TARGETS=(direct pgbouncer relay pgcloak)
declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT [relay]=$RELAY_PORT [pgcloak]=$ENC_PORT)
declare -A PROXY_PID=([pgbouncer]=$BOUNCER_PID [relay]=$PGCLOAK_PID [pgcloak]=$ENC_PID)
LOADS="$WORK/loads"
: >"$LOADS"

PASS_MODES=$(tr ' ' '\n' <<<"$MODES" | grep -vx encrypted | tr '\n' ' ' || true)
for mode in $PASS_MODES; do
    for round in $(seq 1 "$ROUNDS"); do
        declare -A TPS=() PCPU=() SCPU=()
        tps="" txns="" failed=""
        # Rotate the order every round so no contender always runs first or last.
        for i in 0 1 2 3; do
            target=${TARGETS[$(((i + round) % 4))]}
            pid=${PROXY_PID[$target]:-}
            pbefore=0
            [ -n "$pid" ] && pbefore=$(proc_ticks "$pid")
            sbefore=$(server_ticks)
            read -r tps txns failed < <(run_pgbench "${PORT[$target]}" "$mode") || true
            if [ -z "${tps:-}" ] || [ -z "${txns:-}" ]; then
                echo "$target $mode round $round: pgbench failed" >&2
                exit 1
            fi
            sleep 0.2 # let the last backends exit and be reaped
            safter=$(server_ticks)
            SCPU[$target]=$(per_txn $((safter - sbefore)) "$txns")
            if [ -n "$pid" ]; then
                PCPU[$target]=$(per_txn $(($(proc_ticks "$pid") - pbefore)) "$txns")
            else
                PCPU[$target]=0
            fi
            if [ "$failed" != 0 ]; then
                echo "$target $mode round $round: $failed failed transactions" >&2
                exit 1
            fi
            TPS[$target]=$tps
            echo "mode=$mode round=$round target=$target tps=$tps txns=$txns proxy_cpu_us=${PCPU[$target]} server_cpu_us=${SCPU[$target]}" >&2
        done
        cut -d' ' -f1 /proc/loadavg >>"$LOADS"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" \
            "${TPS[direct]}" "${TPS[pgbouncer]}" "${TPS[relay]}" "${TPS[pgcloak]}" \
            "${PCPU[pgbouncer]}" "${PCPU[relay]}" "${PCPU[pgcloak]}" \
            "${SCPU[direct]}" "${SCPU[pgbouncer]}" "${SCPU[relay]}" "${SCPU[pgcloak]}" >>"$RESULTS"
        unset TPS PCPU SCPU
    done
done

col() { awk -F'\t' -v m="$1" -v c="$2" '$1 == m { print $c }' "$RESULTS"; }
ratio() { awk -F'\t' -v m="$1" -v a="$2" -v b="$3" '$1 == m { printf "%.3f\n", $a / $b }' "$RESULTS"; }

if [ -n "${PASS_MODES// /}" ]; then
echo
echo "## pgbench -S, scale $SCALE, $CLIENTS clients ($CONNECT_CLIENTS in connect mode), ${DURATION}s x $ROUNDS interleaved rounds per mode"
echo
echo "Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); $("$PG_BIN/postgres" --version); $(pgbouncer --version | head -1)"
echo "Load average (1 min) after each round: min $(sort -g "$LOADS" | head -1), median $(median <"$LOADS"), max $(sort -g "$LOADS" | tail -1)"
echo "connect = pgbench -C -S -M simple (a new connection, with SCRAM authentication, per transaction)."
echo "pgcloak = with a policy in force (protected table people_enc, catalog connection); relay = no policy."
echo
echo "| mode | direct tps | pgbouncer tps | relay tps | pgcloak tps | pgcloak/pgbouncer | pgcloak/relay | pgcloak/direct |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for mode in $PASS_MODES; do
    printf '| %s | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f |\n' "$mode" \
        "$(col "$mode" 3 | median)" "$(col "$mode" 4 | median)" "$(col "$mode" 5 | median)" "$(col "$mode" 6 | median)" \
        "$(ratio "$mode" 6 4 | median)" "$(ratio "$mode" 6 5 | median)" "$(ratio "$mode" 6 3 | median)"
done
echo
echo "CPU µs per transaction (proxy process; server = all PostgreSQL processes):"
echo
echo "| mode | pgbouncer | relay | pgcloak | pgcloak/relay CPU | pgcloak/pgbouncer CPU | server: direct | server: via pgbouncer | server: via relay | server: via pgcloak |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for mode in $PASS_MODES; do
    printf '| %s | %.1f | %.1f | %.1f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f |\n' "$mode" \
        "$(col "$mode" 7 | median)" "$(col "$mode" 8 | median)" "$(col "$mode" 9 | median)" \
        "$(ratio "$mode" 9 8 | median)" "$(ratio "$mode" 9 7 | median)" \
        "$(col "$mode" 10 | median)" "$(col "$mode" 11 | median)" "$(col "$mode" 12 | median)" "$(col "$mode" 13 | median)"
done
echo
echo "Medians over rounds; ratios are medians of per-round ratios. Per-round data:"
echo
echo '```'
printf 'mode\tround\tdirect\tpgbouncer\trelay\tpgcloak\tcpu_pgbouncer\tcpu_relay\tcpu_pgcloak\tsrv_direct\tsrv_pgbouncer\tsrv_relay\tsrv_pgcloak\n'
cat "$RESULTS"
echo '```'
fi

# --- encrypted workload ----------------------------------------------------------------
case " $MODES " in *" encrypted "*) ;; *) exit 0 ;; esac

# The encrypted table is loaded through pgcloak (COPY FROM STDIN, encrypted in flight).
seq 1 "$ENC_ROWS" | awk '{ print $1 "\t" $1 "\t" $1 }' |
    "$PG_BIN/psql" -h 127.0.0.1 -p "$ENC_PORT" -U bench -d bench -X -q -v ON_ERROR_STOP=1 \
        -c "COPY people_enc (phone, email, nid) FROM STDIN"
loaded=$(psql_admin -d bench -At -c "SELECT count(*) FROM people_enc WHERE substring(phone from 1 for 2) = 'pc'::bytea")
[ "$loaded" = "$ENC_ROWS" ] || { echo "people_enc holds $loaded envelopes, expected $ENC_ROWS" >&2; exit 1; }
psql_admin -d bench -c "ANALYZE people_enc"

for t in people_direct people_bouncer people_plain people_enc; do
    cat >"$WORK/$t.sql" <<SQL
\set k random(1, $ENC_ROWS)
INSERT INTO $t (phone, email, nid) VALUES (:k, :k, :k);
SELECT id, phone, email, nid FROM $t WHERE phone = :k;
SQL
done

run_script() {
    local port=$1 script=$2 out
    out=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U bench -n -M "$ENC_PROTOCOL" -f "$script" \
        -c "$CLIENTS" -j "$THREADS" -T "$DURATION" bench 2>&1) || { echo "$out" >&2; exit 1; }
    local tps txns failed
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    echo "$tps $txns ${failed:-0}"
}

ENC_RESULTS="$WORK/enc_rounds.tsv"
: >"$ENC_RESULTS"
: >"$LOADS"
ENC_TARGETS=(direct bouncer plain enc)
declare -A ENC_PORT_OF=([direct]=$PG_PORT [bouncer]=$BOUNCER_PORT [plain]=$ENC_PORT [enc]=$ENC_PORT)
declare -A ENC_TABLE=([direct]=people_direct [bouncer]=people_bouncer [plain]=people_plain [enc]=people_enc)
declare -A ENC_PROXY=([direct]="" [bouncer]=$BOUNCER_PID [plain]=$ENC_PID [enc]=$ENC_PID)
for round in $(seq 1 "$ROUNDS"); do
    declare -A TPS=() CPU=() SCPU=()
    for i in 0 1 2 3; do
        target=${ENC_TARGETS[$(((i + round) % 4))]}
        proxy=${ENC_PROXY[$target]}
        before=0
        [ -n "$proxy" ] && before=$(proc_ticks "$proxy")
        sbefore=$(server_ticks)
        read -r tps txns failed < <(run_script "${ENC_PORT_OF[$target]}" "$WORK/${ENC_TABLE[$target]}.sql") || true
        after=0
        [ -n "$proxy" ] && after=$(proc_ticks "$proxy")
        if [ -z "${tps:-}" ] || [ -z "${txns:-}" ]; then
            echo "encrypted $target round $round: pgbench failed" >&2
            exit 1
        fi
        sleep 0.2
        SCPU[$target]=$(per_txn $(($(server_ticks) - sbefore)) "$txns")
        if [ "$failed" != 0 ]; then
            echo "encrypted $target round $round: $failed failed transactions" >&2
            exit 1
        fi
        TPS[$target]=$tps
        CPU[$target]=$(per_txn $((after - before)) "$txns")
        echo "mode=encrypted round=$round target=$target tps=$tps txns=$txns" >&2
    done
    cut -d' ' -f1 /proc/loadavg >>"$LOADS"
    printf 'encrypted\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "${TPS[direct]}" "${TPS[plain]}" "${TPS[enc]}" \
        "${CPU[plain]}" "${CPU[enc]}" "${SCPU[direct]}" "${SCPU[plain]}" "${SCPU[enc]}" "${TPS[bouncer]}" "${CPU[bouncer]}" >>"$ENC_RESULTS"
    unset TPS CPU SCPU
done

# The encrypted table holds only envelopes after the run, too.
bad=$(psql_admin -d bench -At -c "SELECT count(*) FROM people_enc WHERE substring(phone from 1 for 2) <> 'pc'::bytea OR substring(email from 1 for 2) <> 'pc'::bytea")
[ "$bad" = 0 ] || { echo "people_enc holds $bad rows that are not envelopes" >&2; exit 1; }

ecol() { awk -F'\t' -v c="$1" '{ print $c }' "$ENC_RESULTS"; }
eratio() { awk -F'\t' -v a="$1" -v b="$2" '{ printf "%.3f\n", $a / $b }' "$ENC_RESULTS"; }
echo
echo "## Encrypted workload: INSERT + SELECT by deterministic equality, 3 encrypted columns, -M $ENC_PROTOCOL, $CLIENTS clients, ${DURATION}s x $ROUNDS interleaved rounds, $ENC_ROWS preloaded rows"
echo
echo "Load average (1 min) after each round: min $(sort -g "$LOADS" | head -1), median $(median <"$LOADS"), max $(sort -g "$LOADS" | tail -1)"
echo
echo "| direct tps (plain table) | pgbouncer tps (plain table) | pgcloak tps (plain table) | pgcloak tps (encrypted) | encrypted/plain via pgcloak | plain via pgcloak/direct | plain via pgbouncer/direct | CPU µs/txn pgbouncer plain / pgcloak plain / pgcloak encrypted | server CPU µs/txn direct / plain / encrypted |"
echo "|---:|---:|---:|---:|---:|---:|---:|---|---|"
printf '| %.0f | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f | %.1f / %.1f / %.1f | %.1f / %.1f / %.1f |\n' \
    "$(ecol 3 | median)" "$(ecol 11 | median)" "$(ecol 4 | median)" "$(ecol 5 | median)" \
    "$(eratio 5 4 | median)" "$(eratio 4 3 | median)" "$(eratio 11 3 | median)" \
    "$(ecol 12 | median)" "$(ecol 6 | median)" "$(ecol 7 | median)" \
    "$(ecol 8 | median)" "$(ecol 9 | median)" "$(ecol 10 | median)"
echo
echo '```'
printf 'mode\tround\tdirect\tpgcloak_plain\tpgcloak_encrypted\tcpu_us_plain\tcpu_us_encrypted\tsrv_direct\tsrv_plain\tsrv_encrypted\tpgbouncer_plain\tcpu_us_pgbouncer\n'
cat "$ENC_RESULTS"
echo '```'
