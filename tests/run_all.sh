#!/usr/bin/env bash
# run_all.sh — every test suite of herald, one summary line per suite, and ONE final line
# "N passed, N failed" (individual tests, all suites). Exit status non-zero if anything failed.
#
# Suites: tests/check_layering.py (include rules), build/asan/test_* (C unit tests), busted on tests/spec (if it has *_spec.lua),
# the Python integration tests (tests/integration), a short run of every fuzz target (tests/fuzz,
# when clang is installed), tests/e2e/run.sh (if present).
# Expects `make asan unit` to have run (make test does it). Env: HERALD_BIN (integration binary),
# HERALD_TEST_TIME_FACTOR (default 1): the tests' one allowance for a slow machine. Every time bound
# a test waits for is multiplied by it (tests/integration/harness.py tf(), the unit tests'
# unit_tf_ms(), the e2e driver), and so are the per-suite limits below, which only catch a hang.
# The suites pass at 1 on two contended cores (all on one core beside a busy loop); tests assert
# outcomes, not which of two timers wins.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TOTAL_PASSED=0
TOTAL_FAILED=0
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/herald-tests.XXXXXX")
trap 'rm -rf "$LOGDIR"' EXIT

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# seconds × HERALD_TEST_TIME_FACTOR, whole
scaled() {
    awk -v s="$1" -v f="${HERALD_TEST_TIME_FACTOR:-1}" 'BEGIN { if (f + 0 <= 0) f = 1; printf "%d", s * f }'
}

# Runs "$@" under a time limit (seconds, scaled), output to $LOG (and to the terminal).
run_logged() {
    local limit log=$2
    limit=$(scaled "$1")
    shift 2
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    local rc=$?
    cat "$log"
    return $rc
}

add() {  # suite passed failed [note]
    TOTAL_PASSED=$((TOTAL_PASSED + $2))
    TOTAL_FAILED=$((TOTAL_FAILED + $3))
    echo "== $1: $2 passed, $3 failed${4:+ ($4)}"
}

# Last "N passed, N failed" line in a file → "N N", or nothing.
last_counts() {
    grep -aE '^([A-Za-z_-]+: )?[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 |
        sed -E 's/^([A-Za-z_-]+: )?([0-9]+) passed, ([0-9]+) failed.*/\2 \3/'
}

# ---- layering: the include rules of src/ (tests/check_layering.py) -------------------------------
log="$LOGDIR/layering.log"
echo "-- tests/check_layering.py (Lua headers only in vm.c, task.c, lua_*.c; no include cycle)"
run_logged 60 "$log" python3 tests/check_layering.py src
rc=$?
counts=$(last_counts "$log")
if [ -n "$counts" ]; then
    set -- $counts
    p=$1 f=$2
    note=""
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; note="exit $rc"; fi
    add "layering" "$p" "$f" "$note"
else
    add "layering" 0 1 "exit $rc"
fi

# ---- C unit tests --------------------------------------------------------------------------------
shopt -s nullglob
units=(build/asan/test_*)
if [ ${#units[@]} -eq 0 ]; then
    echo "== unit: no build/asan/test_* binaries (run make unit)"
fi
for bin in "${units[@]}"; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    log="$LOGDIR/$name.log"
    echo "-- $bin"
    run_logged 300 "$log" "$bin"
    rc=$?
    counts=$(last_counts "$log")
    if [ -n "$counts" ]; then
        set -- $counts
        p=$1 f=$2
    else
        p=0 f=0
    fi
    note=""
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; note="exit $rc"; fi
    if grep -aqE 'ERROR: AddressSanitizer|runtime error:|LeakSanitizer' "$log" && [ "$f" -eq 0 ]; then
        f=1; note="sanitizer report"
    fi
    add "unit $name" "$p" "$f" "$note"
done

# ---- busted specs --------------------------------------------------------------------------------
specs=(tests/spec/*_spec.lua tests/spec/**/*_spec.lua)
if [ ${#specs[@]} -gt 0 ]; then
    log="$LOGDIR/busted.log"
    # teams.testing (lua/teams/testing.lua) loads the core built by make as
    # build/lua/herald/testing_core.so; the paths match the shipped .busted (no --lpath/--cpath
    # flags: busted --lua re-runs itself through sh, which would split them at the ';')
    echo "-- busted tests/spec (teams.testing against build/lua/herald/testing_core.so)"
    if [ ! -f build/lua/herald/testing_core.so ]; then
        echo "   build/lua/herald/testing_core.so is missing: run make"
    fi
    LUA_PATH="./lua/?.lua;./lua/?/init.lua;./tests/spec/?.lua;;" \
    LUA_CPATH="./build/lua/?.so;;" \
        run_logged 300 "$log" busted --lua=lua5.4 -o TAP tests/spec
    rc=$?
    p=$(grep -acE '^ok [0-9]+' "$log")
    f=$(grep -acE '^not ok [0-9]+' "$log")
    note=""
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; note="busted exit $rc"; fi
    add "busted" "$p" "$f" "$note"
else
    echo "== busted: no tests/spec/*_spec.lua, skipped"
fi

# ---- Python integration tests --------------------------------------------------------------------
if ls tests/integration/test_*.py >/dev/null 2>&1; then
    log="$LOGDIR/integration.log"
    echo "-- python3 tests/integration/run_tests.py (unittest discover -s tests/integration -v)"
    # the fault suite (test_jepsen, ~30 s) included; the limit (scaled) only guards against hangs
    run_logged 900 "$log" python3 tests/integration/run_tests.py
    rc=$?
    counts=$(last_counts "$log")
    if [ -n "$counts" ]; then
        set -- $counts
        p=$1 f=$2
        note=$(grep -aoE '^integration: .*, [0-9]+ skipped' "$log" | grep -oE '[0-9]+ skipped' | tail -n 1)
        if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; note="exit $rc"; fi
        add "integration" "$p" "$f" "$note"
    else
        add "integration" 0 1 "runner did not finish (exit $rc)"
    fi
fi

# ---- fuzzing: every libFuzzer target briefly (make fuzz runs each FUZZ_TIME=60 s) -------------------
# One pass/fail per target (tests/fuzz/run.sh prints "fuzz <name>: ok|FAILED (...)"); a crash fails
# the suite and the verdict line names the input that caused it. FUZZ_TEST_TIME: seconds per target.
if command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1; then
    log="$LOGDIR/fuzz.log"
    fuzz_time=${FUZZ_TEST_TIME:-5}
    echo "-- make fuzz FUZZ_TIME=$fuzz_time (tests/fuzz: every target, $fuzz_time s each)"
    timeout --kill-after=10 "$(scaled 600)" make --no-print-directory fuzz FUZZ_TIME="$fuzz_time" \
        FUZZ_WORK="$LOGDIR/fuzz-corpus" >"$log" 2>&1
    rc=$?
    grep -aE '^fuzz [a-z_]+: |runtime error|ERROR: |property failed|error:' "$log" | head -n 40
    verdicts=$(grep -acE '^fuzz [a-z_]+: (ok|FAILED)' "$log")
    fp=$(grep -acE '^fuzz [a-z_]+: ok' "$log")
    ff=$(grep -acE '^fuzz [a-z_]+: FAILED' "$log")
    if [ "$verdicts" -eq 0 ]; then
        tail -n 30 "$log"
        add "fuzz" 0 1 "exit $rc before any target ran (build failed?)"
    else
        note=""
        if [ $rc -ne 0 ] && [ "$ff" -eq 0 ]; then ff=1; note="exit $rc"; fi
        add "fuzz" "$fp" "$ff" "$note"
    fi
else
    echo "== fuzz: skipped (${FUZZ_CC:-clang} not found; the fuzz targets need clang with libFuzzer)"
fi

# ---- end-to-end (Agents Playground) --------------------------------------------------------------
if [ -f tests/e2e/run.sh ]; then
    log="$LOGDIR/e2e.log"
    echo "-- tests/e2e/run.sh"
    run_logged 420 "$log" bash tests/e2e/run.sh
    rc=$?
    counts=$(last_counts "$log")
    if [ -n "$counts" ]; then
        set -- $counts
        p=$1 f=$2
        note=""
        if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; note="exit $rc"; fi
        add "e2e" "$p" "$f" "$note"
    elif [ $rc -eq 0 ]; then
        add "e2e" 1 0
    else
        add "e2e" 0 1 "exit $rc"
    fi
fi

echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
[ "$TOTAL_FAILED" -eq 0 ]
