#!/usr/bin/env bash
# Online encryption benchmark: `pgcloak encrypt` on a ROWS-row table (default 200,000) against
# a plain `UPDATE t SET col = col` on an identical table, in the same cluster, ROUNDS times
# (interleaved: each round builds two fresh identical tables, times the UPDATE on one and the
# encryption of the same column on the other).
#
# Target (issue 15): pgcloak encrypt >= 0.5x the UPDATE's rows/s. The encryption is timed end
# to end (setup, backfill, catch-up, cut-over, constraint validation: the whole command), and
# the table is checked afterwards: every row holds an envelope, none is left in plaintext.
#
# It starts its own throwaway cluster on a free loopback port and removes it on exit.
# Usage: benches/encrypt.sh                      (ROUNDS=3 ROWS=200000 BATCH=5000)
#        PGCLOAK_BIN=target/release/pgcloak benches/encrypt.sh   (skip the release build)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
ROWS=${ROWS:-200000}
BATCH=${BATCH:-}
PASSWORD="bench-Secret-pw1"

cd "$(dirname "$0")/.."
REPO=$(pwd)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

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

WORK=$(mktemp -d /tmp/pgcloak-encbench-XXXXXX)
chmod 755 "$WORK"
cleanup() {
    set +e
    [ -n "${KEEP_LOG:-}" ] && cp "$WORK/postgres.log" "$KEEP_LOG"
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
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
${EXTRA_CONF:-}
CONF
as_postgres "$PG_BIN/pg_ctl" start -w -s -D "$WORK/data" -l "$WORK/postgres.log"
psql_admin() { "$PG_BIN/psql" -h "$WORK/sock" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 -d bench "$@"; }
"$PG_BIN/psql" -h "$WORK/sock" -p "$PG_PORT" -U postgres -X -q -d postgres -c "CREATE DATABASE bench"

umask 077
printf 'version: 1\nactive: 1\ndeterministic: 1\nkeys:\n  1: "%s"\n' "$(head -c 32 /dev/urandom | base64)" >"$WORK/master.keys"
umask 022

now() { date +%s.%N; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
RESULTS="$WORK/rounds.tsv"
: >"$RESULTS"
batch_args=()
[ -n "$BATCH" ] && batch_args=(--batch-size "$BATCH")

for round in $(seq 1 "$ROUNDS"); do
    for t in "enc_$round" "upd_$round"; do
        psql_admin -c "CREATE TABLE $t (id bigint PRIMARY KEY, phone text, note text);
            INSERT INTO $t SELECT g, '09' || lpad(g::text, 8, '0'), 'row ' || g FROM generate_series(1, $ROWS) g"
        psql_admin -c "VACUUM ANALYZE $t"
    done
    psql_admin -c "CHECKPOINT"
    cat >"$WORK/policy.yaml" <<POLICY
version: 1
tables:
  public.enc_$round:
    phone: { type: text, encryption: deterministic, access: { postgres: plaintext } }
POLICY
    cat >"$WORK/pgcloak.yaml" <<YAML
upstream: { host: 127.0.0.1, port: $PG_PORT, tls: disable }
policy: $WORK/policy.yaml
keys: { file: $WORK/master.keys }
catalog: { user: postgres, password_env: PGCLOAK_CATALOG_PASSWORD }
YAML
    # The reference and the encryption alternate which runs first.
    for what in $( ((round % 2)) && echo "update encrypt" || echo "encrypt update"); do
        if [ "$what" = update ]; then
            t0=$(now)
            psql_admin -c "UPDATE upd_$round SET phone = phone"
            t1=$(now)
            upd=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
        else
            t0=$(now)
            PGCLOAK_CATALOG_PASSWORD=$PASSWORD "$PGCLOAK_BIN" encrypt --config "$WORK/pgcloak.yaml" \
                --database bench --table "enc_$round" --column phone "${batch_args[@]}" \
                >"$WORK/encrypt.out" 2>&1 || { cat "$WORK/encrypt.out" >&2; exit 1; }
            t1=$(now)
            enc=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
        fi
    done
    bad=$(psql_admin -At -c "SELECT count(*) FROM enc_$round WHERE phone IS NULL OR substring(phone from 1 for 2) <> 'pc'::bytea")
    [ "$bad" = 0 ] || { echo "enc_$round: $bad rows without an envelope" >&2; exit 1; }
    load=$(cut -d' ' -f1 /proc/loadavg)
    printf '%s\t%s\t%s\t%s\n' "$round" "$upd" "$enc" "$load" >>"$RESULTS"
    echo "round $round: UPDATE ${upd}s, pgcloak encrypt ${enc}s, load $load" >&2
    psql_admin -c "DROP TABLE enc_$round, upd_$round"
done

rcol() { awk -F'\t' -v c="$1" '{ print $c }' "$RESULTS"; }
echo
echo "## pgcloak encrypt vs UPDATE t SET col = col, $ROWS rows, $ROUNDS rounds${BATCH:+, --batch-size $BATCH}"
echo
echo "Machine: $(nproc) cores; $("$PG_BIN/postgres" --version); load average (1 min) per round: $(rcol 4 | tr '\n' ' ')"
echo
echo "| UPDATE s | UPDATE rows/s | encrypt s (whole command) | encrypt rows/s | encrypt/UPDATE |"
echo "|---:|---:|---:|---:|---:|"
u=$(rcol 2 | median)
e=$(rcol 3 | median)
awk -v u="$u" -v e="$e" -v n="$ROWS" -F'\t' 'BEGIN { printf "| %.2f | %.0f | %.2f | %.0f | %.2f |\n", u, n / u, e, n / e, u / e }'
echo
echo "Medians over rounds. Per-round data (round, UPDATE s, encrypt s, load):"
echo '```'
cat "$RESULTS"
echo '```'
