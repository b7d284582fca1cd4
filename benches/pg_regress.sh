#!/usr/bin/env bash
# PostgreSQL's own regression suite (the installed server's `parallel_schedule`), run
# directly and through pgcloak with a policy in force, in one run.
#
# Target (issue 11): through pgcloak, with protected tables present in the regression
# database, as many tests pass as directly (217/217 on 15.x), or the ones that differ are
# refusals that protect something, listed in docs/security.md; never because of a name.
#
# What it does:
#  1. Sources that match the installed server exactly. It writes a private apt sources
#     list (the machine's `deb` entries with `deb-src` added) and private apt lists/cache
#     dirs under the source cache, `apt-get update`s those, then
#     `apt-get source --download-only postgresql-M=<installed version>` and unpacks it with
#     `dpkg-source -x`. The unpacked tree is cached in $SRC_CACHE (default
#     target/pg_regress-src/<version>) and reused by later runs.
#  2. `postgresql-server-dev-M` pinned to the server's version (apt-get install, if the
#     installed one differs), then regress.so, refint.so and autoinc.so (contrib/spi, which
#     the schedule loads) built with PGXS.
#  3. For each mode (direct, pgcloak) a fresh throwaway cluster (initdb as the `postgres`
#     OS user: root cannot run initdb), trust auth on 127.0.0.1 so pg_regress needs no
#     password, `log_statement = all`.
#  4. The `regression` database is created BEFORE the suite, the same way in both modes:
#     pg_regress would drop and re-create it, so it runs with `--use-existing`, and this
#     script does what pg_regress would have done itself (CREATE DATABASE … TEMPLATE
#     template0 and its six ALTER DATABASE … SET lines, sent straight to PostgreSQL), then
#     creates the protected tables (below). The direct run has the same tables, so a
#     difference between the two modes is pgcloak's doing.
#  5. pgcloak (release build) with a policy protecting columns with the commonest names of
#     the suite (`id`, `name`, `a`, `b`, `x`, `f1`) in tables no test touches:
#     `pgcloak_guard.customers` and `public.people_secret`, every encryption kind, PUBLIC
#     views `deny` and `null` (the suite runs as the superuser `postgres`, which the policy
#     does not list). A catalog role and a fresh keyring are set up; `pgcloak check
#     --database regression` must pass before the suite runs, proving the policy is loaded
#     and matches the live schema (the catalog sees the tables).
#  6. pg_regress (run as `postgres`, since some tests make the server write files under
#     the output dir) --schedule=parallel_schedule --host 127.0.0.1 --port <port>
#     --use-existing. Prints: mode, passed/failed, wall time, and the failing tests through
#     pgcloak, each with the first error line pgcloak added and the first differing hunk
#     kept under $RESULTS_DIR/hunks/<test>.diff (full diffs in $RESULTS_DIR/<mode>/).
#
# Needs: root (apt, runuser), PostgreSQL server packages, dpkg-dev (dpkg-source), gcc/make,
# network access to the Debian archive on the first run.
#
# Usage: benches/pg_regress.sh
#        MODES=pgcloak benches/pg_regress.sh          (skip the direct run)
#        PGCLOAK_BIN=target/release/pgcloak benches/pg_regress.sh   (skip the release build)
#        RESULTS_DIR=/tmp/regress benches/pg_regress.sh
#        MAX_CONCURRENT=8 benches/pg_regress.sh       (pg_regress --max-concurrent-tests)
#        NAMES=uncommon benches/pg_regress.sh         (protect columns named pgc_* instead: what
#                                                      fails then is not about column names)
set -euo pipefail

MODES=${MODES:-"direct pgcloak"}
NAMES=${NAMES:-common}
MAX_CONCURRENT=${MAX_CONCURRENT:-20}

cd "$(dirname "$0")/.."
REPO=$(pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/target/pg_regress}

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PG_MAJOR=$(basename "$(dirname "$PG_BIN")")
SERVER_PKG="postgresql-$PG_MAJOR"
SERVER_VERSION=$(dpkg-query -W -f='${Version}' "$SERVER_PKG")
SRC_CACHE=${SRC_CACHE:-$REPO/target/pg_regress-src/$SERVER_VERSION}

log() { echo "== $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root (apt-get, runuser -u postgres)" >&2; exit 1; }
command -v dpkg-source >/dev/null || { echo "dpkg-source missing: apt-get install dpkg-dev" >&2; exit 1; }

# --- 1. sources of exactly the installed server -----------------------------------------
APT_DIR="$REPO/target/pg_regress-src/apt"
APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
    -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache")

private_apt_update() {
    [ -f "$APT_DIR/updated" ] && return
    mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    # deb822 files: "Types: deb" -> "Types: deb deb-src"; one-line files: a deb-src twin.
    local f base
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        sed -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb deb-src/' "$f" \
            >"$APT_DIR/sources.list.d/$(basename "$f")"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        base=$(basename "$f" .list)
        grep -E '^[[:space:]]*deb[[:space:]]' "$f" | sed -E 's/^([[:space:]]*)deb[[:space:]]/\1deb-src /' \
            >"$APT_DIR/sources.list.d/$base-src.list" || true
        grep -E '^[[:space:]]*deb[[:space:]]' "$f" >>"$APT_DIR/sources.list.d/$base-src.list" || true
    done
    log "apt-get update (private lists in $APT_DIR)"
    apt-get "${APT_OPTS[@]}" update >&2
    touch "$APT_DIR/updated"
}

if [ ! -f "$SRC_CACHE/src/test/regress/parallel_schedule" ]; then
    private_apt_update
    DL=$(mktemp -d)
    log "apt-get source --download-only $SERVER_PKG=$SERVER_VERSION"
    (cd "$DL" && apt-get "${APT_OPTS[@]}" source --download-only "$SERVER_PKG=$SERVER_VERSION" >&2)
    rm -rf "$SRC_CACHE"
    mkdir -p "$(dirname "$SRC_CACHE")"
    (cd "$DL" && dpkg-source -x --no-check ./*.dsc "$SRC_CACHE" >&2)
    rm -rf "$DL"
fi
REGRESS_SRC="$SRC_CACHE/src/test/regress"

# --- 2. server-dev pinned to the server, and the C modules the schedule loads ------------
DEV_PKG="postgresql-server-dev-$PG_MAJOR"
if [ "$(dpkg-query -W -f='${Version}' "$DEV_PKG" 2>/dev/null || true)" != "$SERVER_VERSION" ]; then
    private_apt_update
    log "apt-get install $DEV_PKG=$SERVER_VERSION"
    DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y --no-install-recommends \
        "$DEV_PKG=$SERVER_VERSION" >&2
fi
PG_REGRESS="/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test/regress/pg_regress"
[ -x "$PG_REGRESS" ] || { echo "no $PG_REGRESS" >&2; exit 1; }

if [ -z "${PGCLOAK_BIN:-}" ] && [[ " $MODES " == *" pgcloak "* ]]; then
    log "cargo build --release --bin pgcloak"
    cargo build --release --bin pgcloak >&2
    PGCLOAK_BIN="$REPO/target/release/pgcloak"
fi

as_postgres() { runuser -u postgres -- "$@"; }

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

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listening on port $1" >&2
    return 1
}

WORK=$(mktemp -d /tmp/pgcloak-regress-XXXXXX)
chmod 755 "$WORK"
PGCLOAK_PID=""
DATA_DIRS=()

cleanup() {
    set +e
    [ -n "$PGCLOAK_PID" ] && kill "$PGCLOAK_PID" 2>/dev/null && wait "$PGCLOAK_PID" 2>/dev/null
    for d in "${DATA_DIRS[@]}"; do
        [ -f "$d/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" stop -m immediate -D "$d" -s >/dev/null 2>&1
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir "$WORK/lib"
cp "$REGRESS_SRC/regress.c" "$SRC_CACHE/contrib/spi/refint.c" "$SRC_CACHE/contrib/spi/autoinc.c" "$WORK/lib/"
cat >"$WORK/lib/Makefile" <<MK
MODULES = regress refint autoinc
# contrib/spi builds refint this way "for the regression tests" (its NOTICEs are expected).
PG_CPPFLAGS = -DREFINT_VERBOSE
PG_CONFIG = $PG_BIN/pg_config
PGXS := \$(shell \$(PG_CONFIG) --pgxs)
include \$(PGXS)
MK
log "building regress.so refint.so autoinc.so with PGXS"
make -s -C "$WORK/lib" >&2
chown -R postgres: "$WORK/lib"

# --- 3./4. a cluster with the regression database and the protected tables ---------------
# The protected columns: the suite's commonest names, or (NAMES=uncommon) names no test uses.
case "$NAMES" in
common) C_ID=id C_NAME=name C_A=a C_B=b C_X=x C_F1=f1 ;;
uncommon) C_ID=pgc_id C_NAME=pgc_name C_A=pgc_a C_B=pgc_b C_X=pgc_x C_F1=pgc_f1 ;;
*) echo "NAMES must be common or uncommon" >&2; exit 1 ;;
esac
PROTECTED_DDL="
CREATE SCHEMA pgcloak_guard;
CREATE TABLE pgcloak_guard.customers (k int PRIMARY KEY, $C_ID bytea, $C_NAME bytea, $C_A bytea, $C_X bytea);
CREATE TABLE public.people_secret (k int PRIMARY KEY, $C_ID bytea, $C_NAME bytea, $C_A bytea, $C_B bytea, $C_X bytea, $C_F1 bytea);
CREATE ROLE pgcloak_catalog LOGIN;
CREATE ROLE pgcloak_reader NOLOGIN;
GRANT USAGE ON SCHEMA pgcloak_guard TO pgcloak_reader;
GRANT SELECT, INSERT ON pgcloak_guard.customers, public.people_secret TO pgcloak_reader;
GRANT USAGE ON SCHEMA pgcloak_guard TO pgcloak_catalog;
GRANT SELECT ON pgcloak_guard.customers, public.people_secret TO pgcloak_catalog;
"

start_cluster() { # mode -> sets PG_PORT, DATA
    local mode=$1
    DATA="$WORK/$mode/data"
    mkdir -p "$DATA" "$WORK/$mode/sock"
    touch "$WORK/$mode/postgres.log"
    chown -R postgres: "$WORK/$mode"
    chmod 700 "$DATA"
    DATA_DIRS+=("$DATA")
    as_postgres "$PG_BIN/initdb" -D "$DATA" --auth-local=trust --auth-host=trust -U postgres \
        --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
    PG_PORT=$(free_port)
    cat >>"$DATA/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/$mode/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
log_statement = 'all'
log_line_prefix = '%m [%p] %q%u@%d '
CONF
    as_postgres "$PG_BIN/pg_ctl" start -w -s -D "$DATA" -l "$WORK/$mode/postgres.log"
    local psql=("$PG_BIN/psql" -h "$WORK/$mode/sock" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1)
    # What pg_regress itself does when it creates the database (pg_regress.c, create_database).
    "${psql[@]}" -d postgres -c "CREATE DATABASE \"regression\" TEMPLATE=template0"
    "${psql[@]}" -d postgres -c "ALTER DATABASE \"regression\" SET lc_messages TO 'C';
        ALTER DATABASE \"regression\" SET lc_monetary TO 'C';
        ALTER DATABASE \"regression\" SET lc_numeric TO 'C';
        ALTER DATABASE \"regression\" SET lc_time TO 'C';
        ALTER DATABASE \"regression\" SET bytea_output TO 'hex';
        ALTER DATABASE \"regression\" SET timezone_abbreviations TO 'Default';"
    "${psql[@]}" -d regression -c "$PROTECTED_DDL"
}

POLICY="version: 1
tables:
  pgcloak_guard.customers:
    $C_ID:   { type: int4, encryption: deterministic, access: { pgcloak_reader: plaintext, PUBLIC: deny } }
    $C_NAME: { type: text, access: { pgcloak_reader: plaintext, PUBLIC: \"null\" } }
    $C_A:    { type: text, encryption: deterministic, mask: { keep_last: 2 }, access: { pgcloak_reader: plaintext, PUBLIC: masked } }
    $C_X:    { type: text, access: { pgcloak_reader: plaintext, PUBLIC: ciphertext } }
  public.people_secret:
    $C_ID:   { type: int8, encryption: deterministic, access: { pgcloak_reader: plaintext, PUBLIC: deny } }
    $C_NAME: { type: text, encryption: deterministic, access: { pgcloak_reader: plaintext, PUBLIC: deny } }
    $C_A:    { type: text, access: { pgcloak_reader: plaintext, PUBLIC: \"null\" } }
    $C_B:    { type: text, encryption: deterministic, access: { pgcloak_reader: plaintext, PUBLIC: \"null\" } }
    $C_X:    { type: date, access: { pgcloak_reader: plaintext, PUBLIC: deny } }
    $C_F1:   { type: int4, encryption: deterministic, access: { pgcloak_reader: plaintext, PUBLIC: \"null\" } }
"

start_pgcloak() { # sets CLIENT_PORT
    local dir="$WORK/pgcloak/proxy"
    mkdir -p "$dir"
    printf '%s' "$POLICY" >"$dir/policy.yaml"
    "$PGCLOAK_BIN" keygen --file "$dir/master.keys" >/dev/null 2>&1
    chmod 600 "$dir/master.keys"
    CLIENT_PORT=$(free_port)
    cat >"$dir/pgcloak.yaml" <<YAML
listen: 127.0.0.1:$CLIENT_PORT
instance_id: 1
upstream: { host: 127.0.0.1, port: $PG_PORT, tls: disable }
tls: { mode: disabled }
auth: { mode: relay }
trust_upstream_identity: true
policy: $dir/policy.yaml
keys: { file: $dir/master.keys }
catalog: { user: pgcloak_catalog, password: unused-trust-auth, databases: [regression] }
max_connections: 200
log: { format: text, level: warn }
YAML
    # `check --database` exits 1 while the database is looser than the policy and prints
    # the DDL of the database-side guard (envelope CHECK constraints, privileges, statistics,
    # EXECUTE on SQL-executing built-ins): apply all of it as a superuser (the configuration
    # a real deployment runs), then it must pass cleanly, which proves the policy loads and
    # the catalog sees every column. The catalog role may read the envelopes (ciphertext
    # only) so that the keyring sample check runs.
    log "pgcloak check --database regression"
    local rc=0
    "$PGCLOAK_BIN" check --config "$dir/pgcloak.yaml" --database regression >"$dir/check.out" 2>&1 || rc=$?
    if [ "$rc" = 1 ]; then
        grep -E '^    .*;$' "$dir/check.out" |
            "$PG_BIN/psql" -h "$WORK/pgcloak/sock" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 -d regression >&2
        rc=0
        "$PGCLOAK_BIN" check --config "$dir/pgcloak.yaml" --database regression >"$dir/check.out" 2>&1 || rc=$?
    fi
    if [ "$rc" != 0 ]; then
        cat "$dir/check.out" >&2
        echo "pgcloak check --database failed ($rc): the policy does not match the regression database" >&2
        exit 1
    fi
    "$PGCLOAK_BIN" serve --config "$dir/pgcloak.yaml" 2>"$dir/pgcloak.log" &
    PGCLOAK_PID=$!
    wait_port "$CLIENT_PORT"
}

# --- 6. the suite ------------------------------------------------------------------------
rm -rf "$RESULTS_DIR"
mkdir -p "$RESULTS_DIR/hunks"
declare -A PASSED FAILED WALL

run_suite() { # mode port
    local mode=$1 port=$2 out="$WORK/$mode/out"
    mkdir -p "$out"
    chown postgres: "$out"
    log "pg_regress ($mode) on port $port"
    local start end
    start=$(date +%s.%N)
    (cd "$out" && as_postgres "$PG_REGRESS" --inputdir="$REGRESS_SRC" --outputdir="$out" \
        --bindir="$PG_BIN" --dlpath="$WORK/lib" --schedule="$REGRESS_SRC/parallel_schedule" \
        --max-concurrent-tests="$MAX_CONCURRENT" --host 127.0.0.1 --port "$port" \
        --user postgres --use-existing) >"$out/pg_regress.out" 2>&1 || true
    end=$(date +%s.%N)
    WALL[$mode]=$(awk -v a="$start" -v b="$end" "BEGIN { print b - a }")
    mkdir -p "$RESULTS_DIR/$mode"
    cp "$out/pg_regress.out" "$RESULTS_DIR/$mode/"
    [ -f "$out/regression.diffs" ] && cp "$out/regression.diffs" "$RESULTS_DIR/$mode/"
    # PG 15 prints "test NAME ... ok" / "     NAME ... FAILED" (or "failed (ignored)").
    PASSED[$mode]=$(grep -cE '\.\.\. ok ' "$out/pg_regress.out" || true)
    FAILED[$mode]=$(grep -cE '\.\.\. (FAILED|failed)' "$out/pg_regress.out" || true)
    grep -E '\.\.\. (FAILED|failed)' "$out/pg_regress.out" |
        sed -E 's/^(test)? *([^ ]+) +\.\.\..*/\2/' >"$RESULTS_DIR/$mode/failed.txt" || true
}

# Per failing test: its first hunk (kept) and the first ERROR line the run added.
explain_failures() { # mode
    local mode=$1 diffs="$RESULTS_DIR/$1/regression.diffs" name reason
    [ -f "$diffs" ] || return 0
    while read -r name; do
        [ -n "$name" ] || continue
        awk -v t="/$name.out" '
            /^diff / { inside = (index($0, t) > 0); hunks = 0; next }
            inside && /^@@/ { hunks++ }
            inside && hunks <= 1 { print }
        ' "$diffs" >"$RESULTS_DIR/hunks/$mode-$name.diff"
        reason=$(awk -v t="/$name.out" '
            /^diff / { inside = (index($0, t) > 0); next }
            inside && /^\+ERROR:/ { sub(/^\+/, ""); print; exit }
        ' "$diffs")
        printf '  %-28s %s\n' "$name" "${reason:-(no added ERROR line; see hunks/$mode-$name.diff)}"
    done <"$RESULTS_DIR/$mode/failed.txt"
}

for mode in $MODES; do
    start_cluster "$mode"
    if [ "$mode" = pgcloak ]; then
        start_pgcloak
        run_suite pgcloak "$CLIENT_PORT"
        cp "$WORK/pgcloak/proxy/pgcloak.log" "$RESULTS_DIR/pgcloak/" || true
        kill "$PGCLOAK_PID" 2>/dev/null && wait "$PGCLOAK_PID" 2>/dev/null || true
        PGCLOAK_PID=""
    else
        run_suite "$mode" "$PG_PORT"
    fi
    cp "$WORK/$mode/postgres.log" "$RESULTS_DIR/$mode/" || true
    as_postgres "$PG_BIN/pg_ctl" stop -m fast -D "$DATA" -s >/dev/null 2>&1 || true
done

TOTAL=$(grep -E '^test:' "$REGRESS_SRC/parallel_schedule" | sed 's/^test: //' | wc -w)
echo
echo "PostgreSQL $SERVER_VERSION regression suite (parallel_schedule, $TOTAL tests), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %8s %8s %10s\n' mode passed failed wall_s
for mode in $MODES; do
    printf '%-10s %8s %8s %10.1f\n' "$mode" "${PASSED[$mode]}" "${FAILED[$mode]}" "${WALL[$mode]}"
done
for mode in $MODES; do
    if [ -s "$RESULTS_DIR/$mode/failed.txt" ]; then
        echo
        echo "failing tests ($mode), with the first ERROR the run added:"
        explain_failures "$mode"
    fi
done
if [ -f "$RESULTS_DIR/pgcloak/regression.diffs" ]; then
    echo
    echo "every error line pgcloak added in the diffs, grouped (count, message with names elided):"
    grep -E '^\+ERROR:' "$RESULTS_DIR/pgcloak/regression.diffs" |
        grep -iE "pgcloak|origin cannot be resolved|not supported" |
        sed -E 's/^\+ERROR: +//; s/"[^"]*"/"…"/g' | sort | uniq -c | sort -rn | head -25 |
        tee "$RESULTS_DIR/pgcloak/refusals.txt"
fi
echo
echo "results (diffs, logs, first hunks): $RESULTS_DIR (policy: NAMES=$NAMES)"
