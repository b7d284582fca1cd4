#!/usr/bin/env bash
# Third-party driver suites, directly against PostgreSQL and through pgcloak with a policy
# in force, in one run. Target (issue 13): identical passed/failed rows, 0 failed through
# pgcloak. Also runs the 1,000-iteration cancel-ordering check (0 misdirected cancels).
#
# The suites come from the sdists on PyPI at pinned versions (their tests ship there):
#   asyncpg (tests/), psycopg2 (tests/), SQLAlchemy (test/dialect/postgresql, on psycopg2).
# Every database the suites use or create carries a protected table (`pgcloak_guard.secret`,
# created in template1 too), so the policy is in force wherever they go.
#
# Needs: root (the cluster runs as the `postgres` OS user), PostgreSQL's server binaries,
# libpq headers and pg_config (psycopg2 builds from source), python3 with venv, a C compiler.
#
# Usage: benches/compat.sh                     # every suite + the cancel check
#        COMPAT_SUITES="asyncpg" benches/compat.sh
#        COMPAT_PYTEST_ARGS="-k timeout" benches/compat.sh
# Results: $WORK/results/<suite>-<target>.xml and .log; the table goes to stdout.
set -euo pipefail

ASYNCPG_VERSION=0.30.0
PSYCOPG2_VERSION=2.9.10
SQLALCHEMY_VERSION=2.0.36

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${COMPAT_WORK:-/tmp/pgcloak-compat}
SUITES=${COMPAT_SUITES:-"asyncpg psycopg2 sqlalchemy"}
TARGETS=${COMPAT_TARGETS:-"direct pgcloak"}   # one of them alone to split a run across machines
CANCEL_ITERATIONS=${COMPAT_CANCEL_ITERATIONS:-1000}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
PG_PORT=${COMPAT_PG_PORT:-55432}
PROXY_PORT=${COMPAT_PROXY_PORT:-56432}
SUITE_TIMEOUT=${COMPAT_SUITE_TIMEOUT:-3600}
# SQLAlchemy: its PostgreSQL dialect tests (test/dialect/postgresql: compiler, dialect,
# ON CONFLICT, query, reflection; the asyncpg-only ones skip), on psycopg2. Left out by
# default: test_types.py (~9,200 parametrized type round trips, over an hour per target on a
# loaded 2-core machine) and the dialect compliance suite (test/dialect/test_suite.py, ~2x
# that). The whole directory and the suite:
#   COMPAT_SQLALCHEMY_TESTS="test/dialect/postgresql test/dialect/test_suite.py"
SQLALCHEMY_TESTS=${COMPAT_SQLALCHEMY_TESTS:-"test/dialect/postgresql --ignore=test/dialect/postgresql/test_types.py"}

mkdir -p "$WORK"/{sdists,src,results}
chmod 755 "$WORK"
VENV=$WORK/venv
PY=$VENV/bin/python

log() { printf '== %s\n' "$*" >&2; }

# ---- the suites: sdists at pinned versions, built here ----
if [ ! -x "$PY" ]; then
  log "python venv"
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q wheel setuptools 'Cython<3.1' pytest pytest-timeout uvloop distro
for spec in asyncpg==$ASYNCPG_VERSION psycopg2==$PSYCOPG2_VERSION SQLAlchemy==$SQLALCHEMY_VERSION; do
  name=${spec%%==*}; ver=${spec##*==}
  lower=$(echo "$name" | tr 'A-Z' 'a-z')
  if ! ls "$WORK"/sdists/"$lower"-"$ver".tar.gz >/dev/null 2>&1; then
    log "download $spec (sdist)"
    "$VENV/bin/pip" download -q --no-binary :all: --no-deps --no-build-isolation -d "$WORK/sdists" "$spec"
  fi
  if [ ! -d "$WORK/src/$lower-$ver" ]; then
    tar xzf "$WORK/sdists/$lower-$ver.tar.gz" -C "$WORK/src"
    # asyncpg's tests must import the built package, not the uncompiled source tree.
    [ "$lower" = asyncpg ] && mv "$WORK/src/$lower-$ver/asyncpg" "$WORK/src/$lower-$ver/asyncpg.src"
  fi
  # (not `| grep -q`: under pipefail pip's SIGPIPE would count as "not installed")
  if [ "$("$VENV/bin/pip" show "$name" 2>/dev/null | sed -n 's/^Version: //p')" != "$ver" ]; then
    log "build $spec from its sdist"
    DISABLE_SQLALCHEMY_CEXT=1 "$VENV/bin/pip" install -q --no-build-isolation "$WORK/sdists/$lower-$ver.tar.gz"
  fi
done

# ---- pgcloak: release build (COMPAT_PROFILE=debug for a debug one), keyring, policy ----
# Release by default: psycopg2's test_flush_on_write sends up to 86 MB of query text and
# times out (300 s) through a debug build on a 2-core machine; it passes through release.
PROFILE=${COMPAT_PROFILE:-release}
if [ -n "${COMPAT_PGCLOAK:-}" ]; then
  PGCLOAK=$COMPAT_PGCLOAK   # a binary built elsewhere
elif [ "$PROFILE" = release ]; then
  log "release build"
  (cd "$ROOT" && cargo build --release --quiet)
  PGCLOAK=$ROOT/target/release/pgcloak
else
  log "debug build"
  (cd "$ROOT" && cargo build --quiet)
  PGCLOAK=$ROOT/target/debug/pgcloak
fi

# ---- a throwaway cluster as the postgres OS user ----
PGDATA_DIR=$WORK/pgdata
SOCK=$WORK/sock
stop_all() {
  [ -n "${PROXY_PID:-}" ] && kill "$PROXY_PID" 2>/dev/null || true
  [ -d "$PGDATA_DIR" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
}
trap stop_all EXIT
stop_all
rm -rf "$PGDATA_DIR" "$SOCK"
mkdir -p "$PGDATA_DIR" "$SOCK"
chown postgres "$PGDATA_DIR" "$SOCK"
log "initdb + start PostgreSQL on $PG_PORT"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$PGDATA_DIR/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
max_prepared_transactions = 10
EOF
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w start >/dev/null
PSQL=("$PG_BIN/psql" -X -q -h "$SOCK" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1)
guard="CREATE TABLE public.pgcloak_guard (id int PRIMARY KEY, secret bytea)"
"${PSQL[@]}" -d template1 -c "$guard"
for db in postgres asyncpg_test psycopg2_test test; do
  [ "$db" = postgres ] && "${PSQL[@]}" -d postgres -c "$guard" && continue
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE $db"
done
# SQLAlchemy's dialect tests expect these schemas.
for s in test_schema test_schema_2; do
  "${PSQL[@]}" -d test -c "CREATE SCHEMA $s"
done
"${PSQL[@]}" -d test -c "CREATE EXTENSION IF NOT EXISTS hstore" >/dev/null 2>&1 || true
"${PSQL[@]}" -d psycopg2_test -c "CREATE EXTENSION IF NOT EXISTS hstore" >/dev/null 2>&1 || true

CONF=$WORK/pgcloak
mkdir -p "$CONF"
"$PGCLOAK" keygen >"$CONF/master.keys"
chmod 600 "$CONF/master.keys"
cat >"$CONF/policy.yaml" <<EOF
version: 1
tables:
  public.pgcloak_guard:
    secret:
      type: text
      access: { postgres: plaintext, PUBLIC: masked }
      mask: { keep_last: 2 }
EOF
cat >"$CONF/pgcloak.yaml" <<EOF
listen: 127.0.0.1:$PROXY_PORT
upstream: { host: 127.0.0.1, port: $PG_PORT, tls: disable }
tls: { mode: disabled }
auth: { mode: relay }
trust_upstream_identity: true
policy: $CONF/policy.yaml
keys: { file: $CONF/master.keys }
catalog: { user: postgres }
log: { format: text, level: warn }
max_connections: 1000
EOF
log "pgcloak on $PROXY_PORT"
"$PGCLOAK" serve --config "$CONF/pgcloak.yaml" 2>"$WORK/results/pgcloak.log" &
PROXY_PID=$!
for _ in $(seq 100); do
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PROXY_PORT" && break
  sleep 0.1
done

# ---- run one suite against one port ----
run_suite() { # suite target port
  local suite=$1 target=$2 port=$3
  local xml=$WORK/results/$suite-$target.xml out=$WORK/results/$suite-$target.log
  local pytest=("$PY" -m pytest -q -p no:cacheprovider --timeout=300 --junitxml="$xml" ${COMPAT_PYTEST_ARGS:-})
  log "$suite $target"
  case $suite in
    asyncpg)
      # (Run as root, its 4 TestConnectionAttributes tests fail on both sides: they initdb
      # clusters of their own, which PostgreSQL refuses to do as root.)
      (cd "$WORK/src/asyncpg-$ASYNCPG_VERSION" &&
       PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres \
         timeout "$SUITE_TIMEOUT" "${pytest[@]}" tests) >"$out" 2>&1 || true ;;
    psycopg2)
      (cd "$WORK/src/psycopg2-$PSYCOPG2_VERSION" &&
       PSYCOPG2_TESTDB=psycopg2_test PSYCOPG2_TESTDB_HOST=127.0.0.1 PSYCOPG2_TESTDB_PORT=$port \
       PSYCOPG2_TESTDB_USER=postgres timeout "$SUITE_TIMEOUT" "${pytest[@]}" tests) >"$out" 2>&1 || true ;;
    sqlalchemy)
      (cd "$WORK/src/sqlalchemy-$SQLALCHEMY_VERSION" &&
       timeout "$SUITE_TIMEOUT" "${pytest[@]}" -p no:randomly $SQLALCHEMY_TESTS \
         --dburi "postgresql+psycopg2://postgres@127.0.0.1:$port/test") >"$out" 2>&1 || true ;;
  esac
}

summarize() { # xml -> "passed failed skipped"
  "$PY" - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("- - -"); sys.exit()
p = f = s = 0
for case in root.iter("testcase"):
    kinds = {c.tag for c in case}
    if kinds & {"failure", "error"}: f += 1
    elif "skipped" in kinds: s += 1
    else: p += 1
print(p, f, s)
EOF
}

failures() { # xml -> failing test ids with the first line of their message
  "$PY" - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    sys.exit()
for case in root.iter("testcase"):
    for c in case:
        if c.tag in ("failure", "error"):
            msg = (c.get("message") or "").splitlines()[0:1]
            print(f"  {case.get('classname')}.{case.get('name')}: {msg[0][:160] if msg else ''}")
EOF
}

for suite in $SUITES; do
  for target in $TARGETS; do
    case $target in
      direct) run_suite "$suite" direct "$PG_PORT" ;;
      pgcloak) run_suite "$suite" pgcloak "$PROXY_PORT" ;;
    esac
  done
done

# ---- the cancel-ordering check: 1,000 iterations, 0 misdirected cancels ----
cancel_line="not run"
if [ "$CANCEL_ITERATIONS" -gt 0 ]; then
  log "cancel ordering, $CANCEL_ITERATIONS iterations"
  if (cd "$ROOT" && PGCLOAK_CANCEL_ITERATIONS=$CANCEL_ITERATIONS cargo test --quiet \
        --test ops_drivers a_cancel_never_lands_on_the_next_statement -- --nocapture) \
        >"$WORK/results/cancel.log" 2>&1; then
    cancel_line=$(grep -o 'cancel race: .*' "$WORK/results/cancel.log" | tail -1)
  else
    cancel_line="FAILED: $(grep -o 'cancel race: .*' "$WORK/results/cancel.log" | tail -1) (see $WORK/results/cancel.log)"
  fi
fi

# ---- the table ----
echo
printf '| %-12s | %-24s | %-24s |\n' "suite" "direct p/f/s" "through pgcloak p/f/s"
printf '|%s|%s|%s|\n' "--------------" "--------------------------" "--------------------------"
for suite in $SUITES; do
  read -r dp df ds <<<"$(summarize "$WORK/results/$suite-direct.xml")"
  read -r cp cf cs <<<"$(summarize "$WORK/results/$suite-pgcloak.xml")"
  printf '| %-12s | %-24s | %-24s |\n' "$suite" "$dp / $df / $ds" "$cp / $cf / $cs"
done
echo
echo "cancel ordering: $cancel_line"
for suite in $SUITES; do
  for target in direct pgcloak; do
    f=$(failures "$WORK/results/$suite-$target.xml")
    if [ -n "$f" ]; then
      echo
      echo "failures: $suite $target"
      echo "$f"
    fi
  done
done
