#!/usr/bin/env bash
# Runs every fuzz target in turn (one at a time, niced), SECONDS_EACH seconds or RUNS
# executions each, whichever first, and prints libFuzzer's final figures per target.
# Build first: cargo +nightly fuzz build -s none -a   (and python3 seeds.py for the corpora).
set -uo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${SECONDS_EACH:-1800}
RUNS=${RUNS:-10000000}
BIN=target/x86_64-unknown-linux-gnu/release
mkdir -p logs
for t in ${TARGETS:-wire_startup datapath_frontend datapath_backend sql_analyze policy_config envelope_codec}; do
    mkdir -p "corpus/$t" "artifacts/$t"
    nice -n 15 "$BIN/$t" "corpus/$t" -max_total_time="$SECONDS_EACH" -runs="$RUNS" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1
    rc=$?
    last=$(grep -E "^#[0-9]+" "logs/$t.log" | tail -1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log")
    crashes=$(ls "artifacts/$t" | wc -l)
    echo "$t: exit $rc, executions ${execs:-?}, last status: $last, artifacts: $crashes"
done
