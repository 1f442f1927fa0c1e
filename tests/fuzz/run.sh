#!/usr/bin/env bash
# run.sh — runs built libFuzzer targets (build/fuzz/fuzz_<name>) one after another, FUZZ_TIME seconds
# each, and prints one verdict line per target: "fuzz <name>: ok (...)" or "fuzz <name>: FAILED (...)"
# with the crashing input's path. Exit status non-zero when any target failed. Called by `make fuzz`.
# Env: FUZZ_TIME (seconds per target, default 60), FUZZ_ARGS (extra libFuzzer flags), FUZZ_WORK
# (where new inputs go, one directory per target; default build/fuzz/corpus, kept between runs so
# a long campaign builds on the last: tests/run_all.sh gives an empty one, so a brief run replays
# only the seeds and takes the same time every time).
set -u
cd "$(dirname "$0")/../.."

time_per=${FUZZ_TIME:-60}
# the hang bounds (one input, one target) grow with HERALD_TEST_TIME_FACTOR as every test bound does
factor=${HERALD_TEST_TIME_FACTOR:-1}
per_input=$(awk -v f="$factor" 'BEGIN { t = int(10 * f + 0.999); print (t < 1 ? 1 : t) }')
slack=$(awk -v f="$factor" 'BEGIN { t = int(120 * f + 0.999); print (t < 1 ? 1 : t) }')
failed=0
# A leak or UBSan report must fail the run, as in the unit tests.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

for name in "$@"; do
    bin=build/fuzz/fuzz_$name
    seeds=tests/fuzz/corpus/$name
    work=${FUZZ_WORK:-build/fuzz/corpus}/$name
    log=build/fuzz/$name.log
    mkdir -p "$work"
    if [ ! -x "$bin" ]; then
        echo "fuzz $name: FAILED ($bin is not built)"
        failed=1
        continue
    fi
    echo "-- $bin -max_total_time=$time_per $work $seeds"
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
    timeout --kill-after=10 $((time_per + slack)) "$bin" -max_total_time="$time_per" -timeout="$per_input" \
        -rss_limit_mb=2048 -artifact_prefix="build/fuzz/$name-" -print_final_stats=1 \
        ${FUZZ_ARGS:-} "$work" "$seeds" >"$log" 2>&1
    rc=$?
    done_line=$(grep -aoE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1)
    if [ $rc -eq 0 ] && [ -n "$done_line" ]; then
        echo "fuzz $name: ok ($done_line(s), corpus $(ls "$work" | wc -l) new + $(ls "$seeds" 2>/dev/null | wc -l) seeds)"
    else
        grep -aE 'ERROR: |runtime error|SUMMARY|property failed|fuzz_[a-z]+: ' "$log" | head -n 12
        tail -n 25 "$log"
        artifact=$(grep -aoE 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/Test unit written to //')
        echo "fuzz $name: FAILED (exit $rc; input: ${artifact:-none written}; log: $log)"
        failed=1
    fi
done
exit $failed
