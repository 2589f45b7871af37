#!/bin/sh
# Bounded staleness (SSP, s=2) and asynchronous (ASP) runs finish and learn.
. "$(dirname "$0")/lib.sh"

run_job ssp --servers 2 --workers 2 job.epochs=1 job.staleness=2
run_job asp --servers 2 --workers 2 job.epochs=1 job.staleness=inf
[ "$(json "$WORK/ssp/summary.json" consistency)" = ssp ] || fail "ssp run not reported as ssp"
[ "$(json "$WORK/asp/summary.json" consistency)" = asp ] || fail "asp run not reported as asp"
[ "$(json "$WORK/asp/summary.json" staleness)" = inf ] || fail "asp staleness not inf"
at_least "$(json "$WORK/ssp/summary.json" test_accuracy)" 0.80 "SSP test_accuracy"
at_least "$(json "$WORK/asp/summary.json" test_accuracy)" 0.80 "ASP test_accuracy"
