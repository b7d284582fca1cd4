#!/usr/bin/env bash
# Soak (issue 17): CLIENTS connections through pgcloak with a policy in force, a mixed
# read/write workload on encrypted and plain tables for DURATION seconds, and a policy
# reload (alternating two valid versions, SIGHUP) every RELOAD_EVERY seconds.
#
# Success: 0 failed transactions (the workload provokes none on purpose), pgcloak's RSS
# flat after warm-up, and no file-descriptor growth. It prints the RSS/fd curve (one
# sample every SAMPLE_EVERY seconds), pgbench's summary and a verdict line.
#
# The workload (pgbench -M prepared, custom scripts, weights in parentheses):
#   enc_read (5)   SELECT by deterministic equality on an encrypted column, 3 encrypted columns out
#   enc_write (2)  UPDATE of a randomized encrypted column by id
#   plain_read (5) pgbench_accounts by aid
#   plain_write (2) UPDATE pgbench_accounts
# It starts its own cluster (max_connections sized for CLIENTS) and pgcloak on free
# loopback ports and removes everything on exit. Run as root or a user that can initdb.
#
# Usage: benches/soak.sh                         (CLIENTS=500 DURATION=600 RELOAD_EVERY=60)
#        CLIENTS=100 DURATION=180 benches/soak.sh
#        PGCLOAK_BIN=target/debug/pgcloak benches/soak.sh   (default: target/release/pgcloak, built)
set -euo pipefail

CLIENTS=${CLIENTS:-500}
DURATION=${DURATION:-600}
RELOAD_EVERY=${RELOAD_EVERY:-60}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
THREADS=${THREADS:-2}
ROWS=${ROWS:-10000}
SCALE=${SCALE:-1}
PASSWORD="soak-Secret-pw1"

cd "$(dirname "$0")/.."
REPO=$(pwd)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
if [ -z "${PGCLOAK_BIN:-}" ]; then
    cargo build --release --bin pgcloak >&2
    PGCLOAK_BIN="$REPO/target/release/pgcloak"
fi

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
    done
}
wait_port() {
    for _ in $(seq 1 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listening on port $1" >&2
    return 1
}

WORK=$(mktemp -d /tmp/pgcloak-soak-XXXXXX)
chmod 755 "$WORK"
PGCLOAK_PID=""
RELOADER_PID=""
SAMPLER_PID=""
cleanup() {
    set +e
    [ -n "$RELOADER_PID" ] && kill "$RELOADER_PID" 2>/dev/null
    [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null
    [ -n "$PGCLOAK_PID" ] && kill "$PGCLOAK_PID" 2>/dev/null && wait "$PGCLOAK_PID" 2>/dev/null
    [ -f "$WORK/data/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" stop -m immediate -D "$WORK/data" -s >/dev/null 2>&1
    [ -n "${KEEP:-}" ] && { echo "kept $WORK" >&2; return; }
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- PostgreSQL ------------------------------------------------------------------------
PG_PORT=$(free_port)
mkdir "$WORK/data" "$WORK/sock"
echo "$PASSWORD" >"$WORK/pwfile"
touch "$WORK/postgres.log"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/data" "$WORK/sock" "$WORK/pwfile" "$WORK/postgres.log"
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
max_connections = $((CLIENTS + 20))
shared_buffers = 128MB
CONF
as_postgres "$PG_BIN/pg_ctl" start -w -s -D "$WORK/data" -l "$WORK/postgres.log"
psql_admin() { "$PG_BIN/psql" -h "$WORK/sock" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_admin -d postgres -c "CREATE ROLE soak LOGIN PASSWORD '$PASSWORD'"
psql_admin -d postgres -c "CREATE DATABASE soak OWNER soak"
export PGPASSWORD=$PASSWORD
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U soak -i -s "$SCALE" -q soak >/dev/null 2>&1
psql_admin -d soak -c "CREATE TABLE customers (id int PRIMARY KEY, phone bytea, email bytea, nid bytea);
    CREATE INDEX ON customers (phone); GRANT ALL ON customers TO soak;"

# --- pgcloak with a policy ---------------------------------------------------------------
umask 077
printf 'version: 1\nactive: 1\ndeterministic: 1\nkeys:\n  1: "%s"\n' "$(head -c 32 /dev/urandom | base64)" >"$WORK/master.keys"
umask 022
policy() { # $1: what the PUBLIC fallback sees of email (the reloads alternate it)
    cat <<POLICY
version: 1
tables:
  public.customers:
    phone: { type: text, encryption: deterministic, access: { soak: plaintext } }
    nid: { type: text, encryption: deterministic, access: { soak: plaintext } }
    email: { type: text, access: { soak: plaintext, PUBLIC: "$1" } }
POLICY
}
policy null >"$WORK/policy.yaml"
PGCLOAK_PORT=$(free_port)
ADMIN_PORT=$(free_port)
cat >"$WORK/pgcloak.yaml" <<YAML
listen: 127.0.0.1:$PGCLOAK_PORT
instance_id: 1
upstream: { host: 127.0.0.1, port: $PG_PORT, tls: disable }
tls: { mode: disabled }
auth: { mode: relay }
max_connections: $((CLIENTS + 20))
log: { format: text, level: warn }
admin: { listen: "127.0.0.1:$ADMIN_PORT" }
reload_poll_ms: 0
policy: $WORK/policy.yaml
keys: { file: $WORK/master.keys }
catalog: { user: postgres, password_env: PGCLOAK_CATALOG_PASSWORD }
YAML
PGCLOAK_CATALOG_PASSWORD=$PASSWORD "$PGCLOAK_BIN" serve --config "$WORK/pgcloak.yaml" 2>"$WORK/pgcloak.log" &
PGCLOAK_PID=$!
wait_port "$PGCLOAK_PORT" || { cat "$WORK/pgcloak.log" >&2; exit 1; }

# The encrypted table is loaded through pgcloak (COPY FROM STDIN, encrypted in flight).
seq 1 "$ROWS" | awk '{ print $1 "\t" $1 "\t" $1 "@example.com\t" $1 }' |
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PGCLOAK_PORT" -U soak -d soak -X -q -v ON_ERROR_STOP=1 \
        -c "COPY customers (id, phone, email, nid) FROM STDIN"
loaded=$(psql_admin -d soak -At -c "SELECT count(*) FROM customers WHERE substring(phone from 1 for 2) = 'pc'::bytea")
[ "$loaded" = "$ROWS" ] || { echo "customers holds $loaded envelopes, expected $ROWS" >&2; exit 1; }

cat >"$WORK/enc_read.sql" <<SQL
\set k random(1, $ROWS)
SELECT id, phone, email, nid FROM customers WHERE phone = :k;
SQL
cat >"$WORK/enc_write.sql" <<SQL
\set k random(1, $ROWS)
UPDATE customers SET email = :k WHERE id = :k;
SQL
cat >"$WORK/plain_read.sql" <<SQL
\set aid random(1, 100000 * $SCALE)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SQL
cat >"$WORK/plain_write.sql" <<SQL
\set aid random(1, 100000 * $SCALE)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SQL

# --- samplers: RSS and fds every SAMPLE_EVERY s; a reload every RELOAD_EVERY s ----------------
START=$(date +%s)
(
    while kill -0 "$PGCLOAK_PID" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PGCLOAK_PID/status")
        fds=$(ls "/proc/$PGCLOAK_PID/fd" | wc -l)
        echo "$(($(date +%s) - START)) $rss $fds"
        sleep "$SAMPLE_EVERY"
    done
) >"$WORK/samples.txt" &
SAMPLER_PID=$!
(
    n=0
    while sleep "$RELOAD_EVERY"; do
        n=$((n + 1))
        if [ $((n % 2)) = 1 ]; then policy ciphertext >"$WORK/policy.yaml.new"; else policy null >"$WORK/policy.yaml.new"; fi
        mv "$WORK/policy.yaml.new" "$WORK/policy.yaml"
        kill -HUP "$PGCLOAK_PID"
        echo "$(($(date +%s) - START)) reload $n"
    done
) >"$WORK/reloads.txt" &
RELOADER_PID=$!

# --- the workload --------------------------------------------------------------------------
set +e
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PGCLOAK_PORT" -U soak -n -M prepared \
    -f "$WORK/enc_read.sql@5" -f "$WORK/enc_write.sql@2" -f "$WORK/plain_read.sql@5" -f "$WORK/plain_write.sql@2" \
    -c "$CLIENTS" -j "$THREADS" -T "$DURATION" -P 60 soak >"$WORK/pgbench.out" 2>&1
PGBENCH_RC=$?
set -e
sleep 2
kill "$RELOADER_PID" "$SAMPLER_PID" 2>/dev/null || true
RELOADER_PID=""
SAMPLER_PID=""
rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PGCLOAK_PID/status")
fds=$(ls "/proc/$PGCLOAK_PID/fd" | wc -l)
echo "$(($(date +%s) - START)) $rss $fds (after the clients left)" >>"$WORK/samples.txt"

echo "== soak: CLIENTS=$CLIENTS DURATION=${DURATION}s RELOAD_EVERY=${RELOAD_EVERY}s pgcloak=$PGCLOAK_BIN"
echo "== pgbench (exit $PGBENCH_RC)"
grep -E "^(number of|tps|latency|progress:)|aborted|error" "$WORK/pgbench.out" | head -40
echo "== reloads"
metrics=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics")
ok=$(awk '$1 == "pgcloak_reloads_total{result=\"ok\"}" { print int($2) }' <<<"$metrics")
bad=$(awk '$1 == "pgcloak_reloads_total{result=\"invalid\"}" { print int($2) }' <<<"$metrics")
gen=$(awk '$1 == "pgcloak_policy_generation" { print int($2) }' <<<"$metrics")
echo "reloads sent: $(wc -l <"$WORK/reloads.txt"), applied: ${ok:-0}, refused: ${bad:-0}, generation in force: ${gen:-?}"
echo "== RSS (KiB) and fds of pgcloak: seconds rss fds"
cat "$WORK/samples.txt"
failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$WORK/pgbench.out")
errors=$(grep -ciE "error|panic" "$WORK/pgcloak.log" || true)
echo "== pgcloak log: $errors error/panic lines"
grep -iE "error|panic" "$WORK/pgcloak.log" | head -5 || true
# Flat RSS: the last sample under load within 10% (or 8 MiB) of the one at 1/3 of the run.
awk -v third=$((DURATION / 3)) '
    $1 >= third && !base { base = $2 }
    NF == 3 { last = $2; lastfd = $3 }
    $1 >= third && !basefd { basefd = $3 }
    END {
        growth = last - base
        printf "RSS after warm-up: %d -> %d KiB (%+d); fds %d -> %d\n", base, last, growth, basefd, lastfd
        if (growth > 8192 && growth > base / 10) { print "RSS NOT FLAT"; exit 1 }
        if (lastfd > basefd + 5) { print "FD GROWTH"; exit 1 }
    }' "$WORK/samples.txt" && flat=yes || flat=no
if [ "$PGBENCH_RC" = 0 ] && [ "${failed:-0}" = 0 ] && [ "$flat" = yes ] && [ "${ok:-0}" = "$(wc -l <"$WORK/reloads.txt")" ]; then
    echo "SOAK PASSED"
else
    echo "SOAK FAILED (pgbench exit $PGBENCH_RC, failed ${failed:-?}, flat $flat)"
    exit 1
fi
