#!/usr/bin/env bash
# Memory per idle client connection: opens CONNS (default 1,000) idle connections through a
# pgcloak WITH A POLICY IN FORCE (protected table in the database, catalog connection,
# SCRAM relayed to PostgreSQL), and reports (RSS_after - RSS_before) / CONNS.
#
# Method: pgbench -C-less clients that each run one `SELECT 1` and then sleep, so every
# session has gone through authentication, the data-path setup (schema snapshot, role
# memberships, reach, search_path) and one statement, and then sits idle. RSS_before is
# taken after one warm-up session (so the per-database snapshot and caches, allocated once,
# are not charged to the connections); RSS_after once PostgreSQL shows all CONNS sessions
# idle. Target (issue 15): < 64 KiB per connection.
#
# It starts its own throwaway cluster (max_connections = CONNS + 50) and removes it on exit.
# Usage: benches/idle_memory.sh             (CONNS=1000)
#        PGCLOAK_BIN=target/release/pgcloak benches/idle_memory.sh   (skip the release build)
set -euo pipefail

CONNS=${CONNS:-1000}
HOLD=${HOLD:-90}
PASSWORD="bench-Secret-pw1"

cd "$(dirname "$0")/.."
REPO=$(pwd)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

if [ -z "${PGCLOAK_BIN:-}" ]; then
    cargo build --release --bin pgcloak >&2
    PGCLOAK_BIN="$REPO/target/release/pgcloak"
fi
[ "$(ulimit -n)" -ge $((CONNS * 2 + 100)) ] || ulimit -n $((CONNS * 2 + 100))

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

WORK=$(mktemp -d /tmp/pgcloak-idle-XXXXXX)
chmod 755 "$WORK"
PGCLOAK_PID=""
BENCH_PID=""
cleanup() {
    set +e
    [ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null && wait "$BENCH_PID" 2>/dev/null
    [ -n "$PGCLOAK_PID" ] && kill "$PGCLOAK_PID" 2>/dev/null && wait "$PGCLOAK_PID" 2>/dev/null
    [ -f "$WORK/data/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" stop -m immediate -D "$WORK/data" -s >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

PG_PORT=$(free_port)
mkdir "$WORK/data" "$WORK/sock"
echo "$PASSWORD" >"$WORK/pwfile"
touch "$WORK/postgres.log"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$WORK/data" "$WORK/sock" "$WORK/pwfile" "$WORK/postgres.log"
fi
chmod 700 "$WORK/data"
as_postgres "$PG_BIN/initdb" -D "$WORK/data" --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$WORK/pwfile" -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$WORK/data/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/sock'
fsync = off
max_connections = $((CONNS + 50))
shared_buffers = 128MB
CONF
as_postgres "$PG_BIN/pg_ctl" start -w -s -D "$WORK/data" -l "$WORK/postgres.log"
psql_admin() { "$PG_BIN/psql" -h "$WORK/sock" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_admin -d postgres -c "CREATE ROLE bench LOGIN PASSWORD '$PASSWORD'"
psql_admin -d postgres -c "CREATE DATABASE bench OWNER bench"
psql_admin -d bench -c "CREATE TABLE people_enc (id bigserial PRIMARY KEY, phone bytea, email bytea);
    GRANT ALL ON people_enc TO bench"

umask 077
printf 'version: 1\nactive: 1\ndeterministic: 1\nkeys:\n  1: "%s"\n' "$(head -c 32 /dev/urandom | base64)" >"$WORK/master.keys"
umask 022
cat >"$WORK/policy.yaml" <<POLICY
version: 1
tables:
  public.people_enc:
    phone: { type: text, encryption: deterministic, access: { bench: plaintext } }
    email: { type: text, access: { bench: plaintext } }
POLICY
PGCLOAK_PORT=$(free_port)
cat >"$WORK/pgcloak.yaml" <<YAML
listen: 127.0.0.1:$PGCLOAK_PORT
instance_id: 1
upstream: { host: 127.0.0.1, port: $PG_PORT, tls: disable }
tls: { mode: disabled }
auth: { mode: relay }
max_connections: $((CONNS + 50))
log: { format: text, level: warn }
policy: $WORK/policy.yaml
keys: { file: $WORK/master.keys }
catalog: { user: postgres, password_env: PGCLOAK_CATALOG_PASSWORD }
YAML
PGCLOAK_CATALOG_PASSWORD=$PASSWORD "$PGCLOAK_BIN" serve --config "$WORK/pgcloak.yaml" 2>"$WORK/pgcloak.log" &
PGCLOAK_PID=$!
for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PGCLOAK_PORT") 2>/dev/null && break
    sleep 0.05
done

export PGPASSWORD=$PASSWORD
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$PGCLOAK_PID/status"; }
idle_sessions() { psql_admin -d postgres -At -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bench' AND state = 'idle'"; }

# Warm-up: one session through the data path (snapshot, caches, analysis of SELECT 1).
for _ in 1 2 3; do
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PGCLOAK_PORT" -U bench -d bench -X -q -c "SELECT 1" >/dev/null
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PGCLOAK_PORT" -U bench -d bench -X -q -c "SELECT count(*) FROM people_enc WHERE phone = 'x'" >/dev/null
done
sleep 1
before=$(rss_kib)

printf 'SELECT 1;\n\\sleep %s s\n' "$HOLD" >"$WORK/idle.sql"
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PGCLOAK_PORT" -U bench -n -c "$CONNS" -j 4 -t 1 \
    -f "$WORK/idle.sql" bench >"$WORK/pgbench.out" 2>&1 &
BENCH_PID=$!
n=0
for _ in $(seq 1 $((HOLD * 2 - 20))); do
    sleep 0.5
    n=$(idle_sessions)
    [ "$n" -ge "$CONNS" ] && break
done
[ "$n" -ge "$CONNS" ] || { echo "only $n of $CONNS sessions became idle" >&2; cat "$WORK/pgbench.out" "$WORK/pgcloak.log" >&2; exit 1; }
sleep 2
after=$(rss_kib)
kill "$BENCH_PID" 2>/dev/null || true
wait "$BENCH_PID" 2>/dev/null || true
BENCH_PID=""

echo "## Idle connections through pgcloak with a policy in force"
echo
echo "$CONNS idle sessions (SCRAM relayed, data path set up, one SELECT 1 each); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| RSS before | RSS with $CONNS idle | per connection |"
echo "|---:|---:|---:|"
awk -v b="$before" -v a="$after" -v n="$CONNS" 'BEGIN { printf "| %d KiB | %d KiB | %.1f KiB |\n", b, a, (a - b) / n }'
