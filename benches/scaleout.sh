#!/usr/bin/env bash
# Scale-out (issue 17): two pgcloak instances, each with `peers` naming the other, behind
# HAProxy in TCP mode (round robin, health-checked), in front of one PostgreSQL.
#
# It checks, and prints figures for:
#   1. sessions spread across both instances (pgcloak_connections_active of each);
#   2. a cancel sent through the load balancer (psql's SIGINT sends a CancelRequest on a new
#      connection) stops the right query - and only it - whichever instance receives it:
#      the rounds alternate so the cancel lands on the owner and on the other instance;
#   3. a reload of both (policy rewritten, SIGHUP each) is seen by open sessions on both
#      instances at their next statement;
#   4. killing one instance (SIGKILL) loses only its own sessions: the other instance's open
#      session goes on, and new sessions through the balancer are all served.
# Exit status 0 only if every check passed. Needs haproxy (apt-get install haproxy), PostgreSQL.
#
# Usage: benches/scaleout.sh     (PGCLOAK_BIN=target/debug/pgcloak to skip the release build)
set -euo pipefail

PASSWORD="scale-Secret-pw1"
cd "$(dirname "$0")/.."
REPO=$(pwd)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
command -v haproxy >/dev/null || { echo "haproxy is not installed (apt-get install haproxy)" >&2; exit 1; }
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

WORK=$(mktemp -d /tmp/pgcloak-scaleout-XXXXXX)
chmod 755 "$WORK"
declare -A PID=()
BG=()
FAILS=0
cleanup() {
    set +e
    for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
    for i in "${!PID[@]}"; do kill "${PID[$i]}" 2>/dev/null && wait "${PID[$i]}" 2>/dev/null; done
    [ -f "$WORK/haproxy.pid" ] && kill "$(cat "$WORK/haproxy.pid")" 2>/dev/null
    [ -f "$WORK/data/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" stop -m immediate -D "$WORK/data" -s >/dev/null 2>&1
    [ -n "${KEEP:-}" ] && { echo "kept $WORK" >&2; return; }
    rm -rf "$WORK"
}
trap cleanup EXIT
check() { # $1: description, $2: 0 = pass
    if [ "$2" = 0 ]; then echo "PASS  $1"; else echo "FAIL  $1"; FAILS=$((FAILS + 1)); fi
}

# --- PostgreSQL --------------------------------------------------------------------------
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
max_connections = 100
CONF
as_postgres "$PG_BIN/pg_ctl" start -w -s -D "$WORK/data" -l "$WORK/postgres.log"
psql_admin() { "$PG_BIN/psql" -h "$WORK/sock" -p "$PG_PORT" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
psql_admin -d postgres -c "CREATE ROLE app LOGIN PASSWORD '$PASSWORD'"
psql_admin -d postgres -c "CREATE DATABASE scale OWNER app"
psql_admin -d scale -c "CREATE TABLE customers (id int PRIMARY KEY, phone bytea); GRANT ALL ON customers TO app;"
export PGPASSWORD=$PASSWORD

# --- two pgcloak instances, peers of each other -----------------------------------------
umask 077
printf 'version: 1\nactive: 1\ndeterministic: 1\nkeys:\n  1: "%s"\n' "$(head -c 32 /dev/urandom | base64)" >"$WORK/master.keys"
umask 022
policy() { # $1: what app sees of phone
    printf 'version: 1\ntables:\n  public.customers:\n    phone: { type: text, encryption: deterministic, mask: { keep_last: 3 }, access: { app: %s, PUBLIC: masked } }\n' "$1"
}
policy plaintext >"$WORK/policy.yaml"
declare -A PORT=() ADMIN=()
for i in 1 2; do PORT[$i]=$(free_port); ADMIN[$i]=$(free_port); done
start_instance() {
    local i=$1 other=$((3 - $1))
    cat >"$WORK/pgcloak-$i.yaml" <<YAML
listen: 127.0.0.1:${PORT[$i]}
instance_id: $i
peers: { $other: "127.0.0.1:${PORT[$other]}" }
upstream: { host: 127.0.0.1, port: $PG_PORT, tls: disable }
tls: { mode: disabled }
auth: { mode: relay }
admin: { listen: "127.0.0.1:${ADMIN[$i]}" }
log: { format: text, level: info }
reload_poll_ms: 0
policy: $WORK/policy.yaml
keys: { file: $WORK/master.keys }
catalog: { user: postgres, password_env: PGCLOAK_CATALOG_PASSWORD }
YAML
    PGCLOAK_CATALOG_PASSWORD=$PASSWORD "$PGCLOAK_BIN" serve --config "$WORK/pgcloak-$i.yaml" 2>"$WORK/pgcloak-$i.log" &
    PID[$i]=$!
}
start_instance 1
start_instance 2
wait_port "${PORT[1]}" && wait_port "${PORT[2]}" || { cat "$WORK"/pgcloak-*.log >&2; exit 1; }

# --- HAProxy, TCP mode ---------------------------------------------------------------------
LB=$(free_port)
cat >"$WORK/haproxy.cfg" <<CFG
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    retries 2
    option redispatch
frontend pg
    bind 127.0.0.1:$LB
    default_backend pgcloak
backend pgcloak
    balance roundrobin
    option httpchk GET /readyz
    server cloak1 127.0.0.1:${PORT[1]} check port ${ADMIN[1]} inter 500ms fall 2 rise 2
    server cloak2 127.0.0.1:${PORT[2]} check port ${ADMIN[2]} inter 500ms fall 2 rise 2
CFG
haproxy -f "$WORK/haproxy.cfg" -D -p "$WORK/haproxy.pid"
wait_port "$LB"
sleep 1.5  # both servers pass their first health checks

PSQL=("$PG_BIN/psql" -h 127.0.0.1 -p "$LB" -U app -d scale -X -q -At)
metric() { # $1: instance, $2: metric name (no labels)
    curl -s "http://127.0.0.1:${ADMIN[$1]}/metrics" | awk -v m="$2" '$1 == m { print int($2) }'
}
totals() { echo "$(metric 1 pgcloak_connections_total) $(metric 2 pgcloak_connections_total)"; }
"${PSQL[@]}" -c "INSERT INTO customers VALUES (1, '0911000567')"

# 1. Sessions spread across both instances.
for n in $(seq 1 10); do
    "${PSQL[@]}" -c "SELECT pg_sleep(4)" >/dev/null &
    BG+=($!)
done
sleep 2
a1=$(metric 1 pgcloak_connections_active)
a2=$(metric 2 pgcloak_connections_active)
echo "10 sessions through the balancer: instance 1 holds $a1, instance 2 holds $a2"
check "sessions spread across both instances" $([ "$a1" -ge 3 ] && [ "$a2" -ge 3 ] && echo 0 || echo 1)
for b in "${BG[@]}"; do wait "$b" || true; done
BG=()

# 2. Cancel through the balancer stops the right query, whichever instance receives it.
running() { psql_admin -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%/* $1 */%' AND pid <> pg_backend_pid()"; }
forwarded=0 local_cancels=0
for round in 1 2 3 4; do
    before=$(totals)
    "${PSQL[@]}" -c "SELECT pg_sleep(60) /* X$round */" >"$WORK/x$round.out" 2>&1 &
    x=$!
    for _ in $(seq 1 100); do [ "$(running "X$round")" = 1 ] && break; sleep 0.05; done
    mid=$(totals)
    # One or two bystanders, so the cancel's connection lands on the owner or the other one.
    bys=()
    for b in $(seq 0 $((round % 2))); do
        "${PSQL[@]}" -c "SELECT pg_sleep(60) /* Y$round$b */" >/dev/null 2>&1 &
        bys+=($!)
        for _ in $(seq 1 100); do [ "$(running "Y$round$b")" = 1 ] && break; sleep 0.05; done
    done
    pre=$(totals)
    t0=$(date +%s.%N)
    kill -INT "$x"
    wait "$x" || true
    t1=$(date +%s.%N)
    post=$(totals)
    owner=$(awk -v b="$before" -v m="$mid" 'BEGIN { split(b, x); split(m, y); print (y[1] > x[1]) ? 1 : 2 }')
    receiver=$(awk -v b="$pre" -v m="$post" 'BEGIN { split(b, x); split(m, y); print (y[1] > x[1]) ? 1 : 2 }')
    [ "$owner" = "$receiver" ] && local_cancels=$((local_cancels + 1)) || forwarded=$((forwarded + 1))
    took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    ok=1
    grep -q "canceling statement due to user request" "$WORK/x$round.out" && ok=0
    alive=0
    for b in $(seq 0 $((round % 2))); do alive=$((alive + $(running "Y$round$b"))); done
    echo "round $round: query on instance $owner, cancel received by instance $receiver, stopped in ${took}s; bystanders still running: $alive/${#bys[@]}"
    check "round $round: the cancelled query stopped with 57014" $ok
    check "round $round: no other query was cancelled" $([ "$alive" = "${#bys[@]}" ] && echo 0 || echo 1)
    psql_admin -d postgres -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%/* Y$round%' AND pid <> pg_backend_pid()" >/dev/null
    for b in "${bys[@]}"; do wait "$b" || true; done
done
echo "cancels received by the owner: $local_cancels, forwarded to the owner by the other instance: $forwarded"
check "cancels were forwarded between instances" $([ "$forwarded" -ge 1 ] && [ "$local_cancels" -ge 1 ] && echo 0 || echo 1)

# 3 + 4. Open sessions on both instances (psql reading statements from a FIFO).
open_session() { # $1: name -> fd in FD_$1, output in $WORK/$1.out, pid in SPID_$1
    mkfifo "$WORK/$1.fifo"
    : >"$WORK/$1.out"
    stdbuf -oL "${PSQL[@]}" <"$WORK/$1.fifo" >>"$WORK/$1.out" 2>&1 &
    eval "SPID_$1=$!"
    BG+=($!)
    exec {fd}>"$WORK/$1.fifo"
    eval "FD_$1=$fd"
}
say() { # $1: session, $2: SQL; waits for one more output line
    local fd n
    eval "fd=\$FD_$1"
    n=$(wc -l <"$WORK/$1.out")
    echo "$2;" >&"$fd"
    for _ in $(seq 1 100); do [ "$(wc -l <"$WORK/$1.out")" -gt "$n" ] && break; sleep 0.05; done
    tail -1 "$WORK/$1.out"
}
before=$(totals)
open_session s1
say s1 "SELECT 'ready'" >/dev/null
mid=$(totals)
open_session s2
say s2 "SELECT 'ready'" >/dev/null
owner1=$(awk -v b="$before" -v m="$mid" 'BEGIN { split(b, x); split(m, y); print (y[1] > x[1]) ? 1 : 2 }')
echo "session s1 is on instance $owner1, s2 on the other"
v1=$(say s1 "SELECT phone FROM customers WHERE id = 1")
v2=$(say s2 "SELECT phone FROM customers WHERE id = 1")
check "before the reload both sessions read plaintext ($v1, $v2)" $([ "$v1" = 0911000567 ] && [ "$v2" = 0911000567 ] && echo 0 || echo 1)
policy masked >"$WORK/policy.yaml"
kill -HUP "${PID[1]}" "${PID[2]}"
for _ in $(seq 1 100); do
    [ "$(grep -c "policy and keyring reloaded" "$WORK/pgcloak-1.log" "$WORK/pgcloak-2.log" | awk -F: '{ s += ($2 > 0) } END { print s }')" = 2 ] && break
    sleep 0.05
done
v1=$(say s1 "SELECT phone FROM customers WHERE id = 1")
v2=$(say s2 "SELECT phone FROM customers WHERE id = 1")
echo "first statement after the reload of both: s1 reads $v1, s2 reads $v2"
check "after the reload both sessions' next statement is masked" $([ "$v1" = "*******567" ] && [ "$v2" = "*******567" ] && echo 0 || echo 1)

# Kill the instance that holds s1.
kill -KILL "${PID[$owner1]}"
wait "${PID[$owner1]}" 2>/dev/null || true
unset "PID[$owner1]"
sleep 0.2
v1=$(say s1 "SELECT 'still here'")
v2=$(say s2 "SELECT 'still here'")
echo "after killing instance $owner1: s1 got \"$v1\", s2 got \"$v2\""
check "the killed instance's session is lost" $([ "$v1" != "still here" ] && echo 0 || echo 1)
check "the other instance's session goes on" $([ "$v2" = "still here" ] && echo 0 || echo 1)
served=0
for n in $(seq 1 10); do
    "${PSQL[@]}" -c "SELECT 1" >/dev/null 2>&1 && served=$((served + 1))
done
echo "new sessions through the balancer after the kill: $served/10 served"
check "new sessions are served by the surviving instance" $([ "$served" = 10 ] && echo 0 || echo 1)

if [ "$FAILS" = 0 ]; then echo "SCALEOUT PASSED"; else echo "SCALEOUT FAILED ($FAILS checks)"; exit 1; fi
