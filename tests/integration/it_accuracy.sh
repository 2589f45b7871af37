#!/bin/sh
# The issue's acceptance run: the default job (BSP), 2 shards + 2 workers, reaches test accuracy
# >= 0.88 within 10 epochs.
. "$(dirname "$0")/lib.sh"

run_job default --servers 2 --workers 2
S="$WORK/default/summary.json"
[ "$(json "$S" epochs)" -le 10 ] || fail "more than 10 epochs"
at_least "$(json "$S" test_accuracy)" 0.88 "test_accuracy of the default job"
cat "$WORK/default/metrics.csv"
