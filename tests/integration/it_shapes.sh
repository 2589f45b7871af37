#!/bin/sh
# Any S >= 1 and W >= 1: one shard and one worker, three of each, more shards than some tensors have
# rows of... all train. Other optimizers run on the shards too.
. "$(dirname "$0")/lib.sh"

ARGS="job.max_steps=150 data.train_limit=12000 data.test_limit=2000"
run_job s1w1 --servers 1 --workers 1 $ARGS
run_job s3w3 --servers 3 --workers 3 $ARGS
run_job sgd --servers 2 --workers 2 $ARGS optimizer.type=momentum optimizer.lr=0.05
at_least "$(json "$WORK/s1w1/summary.json" test_accuracy)" 0.65 "S=1 W=1 test_accuracy"
at_least "$(json "$WORK/s3w3/summary.json" test_accuracy)" 0.65 "S=3 W=3 test_accuracy"
at_least "$(json "$WORK/sgd/summary.json" test_accuracy)" 0.65 "momentum test_accuracy"
[ "$(json "$WORK/s3w3/summary.json" workers)" = 3 ] || fail "workers"
