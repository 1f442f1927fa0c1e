#!/usr/bin/env bash
# tests/bench/outbox.sh — the outbox benchmark (issue 4); make bench runs it from tests/bench/run.sh.
#
#  1. limits off: build/herald (HERALD_GOVERNOR=off) queues and delivers 100,000 messages over 1,000
#     conversations to the libevent null connector: messages/s, SQLite commits per message, peak RSS;
#  2. limits on: governor on against the Teams-like fake connector (tests/fake_connector.py): a burst
#     of 100 to one conversation and 5,000 over 500 conversations of one tenant (~100 s, the allowed
#     minimum is 99 s at 50/s), plus 500 over 50 conversations at a fake with exact windows (no
#     jitter allowance): achieved fraction of the allowed rate and 429 counts.
# Writes build/bench/outbox.md and appends it to build/bench/results.md when that exists.
# Env: OUTBOX_N [100000] OUTBOX_M [1000] OUTBOX_CHUNK [10000] OUTBOX_BURST [100] OUTBOX_BULK [5000]
#      OUTBOX_BULK_CONVS [500] OUTBOX_EXACT [500] OUTBOX_SLACK_MS [100] OUTBOX_SKIP_LIMITS [0]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT=build/bench
mkdir -p "$OUT"
[ -x build/herald ] || { echo "outbox bench: build/herald missing (run make)" >&2; exit 1; }
NC_BIN="$OUT/null_connector"
if [ ! -x "$NC_BIN" ] || [ tests/bench/null_connector.c -nt "$NC_BIN" ]; then
  # shellcheck disable=SC2046
  ${CC:-cc} -O2 -Wall -Wextra -Werror -o "$NC_BIN" tests/bench/null_connector.c $(pkg-config --cflags --libs libevent)
fi
python3 tests/bench/outbox_bench.py "$NC_BIN" >"$OUT/outbox.md"
cat "$OUT/outbox.md"
if [ -f "$OUT/results.md" ]; then
  { echo; cat "$OUT/outbox.md"; } >>"$OUT/results.md"
fi
