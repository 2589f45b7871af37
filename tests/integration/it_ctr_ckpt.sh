#!/bin/sh
# Checkpoints of a model with sparse tables: a rank SIGKILLed mid-training, restarted by
# --max-restarts from its newest checkpoint, ends bit-identical to an uninterrupted run (the test
# logits of every example, which read every table row the test data touches, and the dense
# parameters); so does SIGUSR1 (exit 85) then --resume auto on 3 shards instead of 2 (rows re-placed
# by hash). The shard files hold each table's rows as plain HDF5 that h5py reads.
. "$(dirname "$0")/lib.sh"

"$TESSERA" datagen ctr --rows 300000 --slots 4 --vocab 5000 --seed 7 --out "$WORK/data" >/dev/null
ARGS="ctr_dlrm --servers 2 --workers 2 data.dir=$WORK/data data.sparse_features=4 job.epochs=2
      job.save_test_logits=1 --checkpoint-every 200"
# shellcheck disable=SC2086
run_job ref $ARGS "layer emb.features=0-3"

same_as_ref() {
    cmp "$WORK/ref/params.bin" "$WORK/$1/params.bin" || fail "$1: dense parameters differ from the uninterrupted run"
    n=0
    for f in "$WORK"/ref/test-logits-*.f32; do
        cmp "$f" "$WORK/$1/$(basename "$f")" || fail "$1: test logits $(basename "$f") differ"
        n=$((n + 1))
    done
    [ "$n" -eq 2 ] || fail "expected 2 test-logits files, found $n"
}

# shellcheck disable=SC2086
start_job killed $ARGS "layer emb.features=0-3" --max-restarts 2
wait_log killed "checkpoint committed step=200"
sleep "$(shuf -i 0-30 -n 1 | sed 's/^/0./')"
kill_random_rank killed
wait $JOB_PID || { tail -20 "$WORK/killed.log" >&2; fail "the restarted job failed"; }
grep -q "restart 1 of 2 after failure" "$WORK/killed.log" || fail "no restart logged"
grep -q "shard restored table=emb.slot3 rows=[1-9]" "$WORK/killed.log" || fail "no table rows restored"
same_as_ref killed
echo "ok: killed rank, restarted with its tables, bit-identical"

# shellcheck disable=SC2086
start_job stopped $ARGS "layer emb.features=0-3"
stop_after stopped "checkpoint committed step=400"
step=$(grep -o "checkpoint committed step=[0-9]* .*stop=1" "$WORK/stopped.log" | sed 's/.*step=\([0-9]*\).*/\1/')
[ -n "$step" ] || fail "no stop checkpoint"
ck=$(printf "%s/stopped/checkpoints/step-%09d" "$WORK" "$step")
"$TESSERA" ckpt inspect "$ck" >"$WORK/inspect.txt"
grep -q "emb.slot0 .*dynamic x16 .*shard 1 .*holds .*rows (sparse, adagrad)" "$WORK/inspect.txt" ||
    { cat "$WORK/inspect.txt" >&2; fail "ckpt inspect does not list the tables"; }

/usr/bin/python3 - "$ck" <<'PY' || fail "h5py: the tables in the shard files are not as documented"
import sys, h5py, numpy as np
ck = sys.argv[1]
ids = {}
for k in range(2):
    with h5py.File(f"{ck}/shard-{k}.h5", "r") as f:
        for name, g in f["tables"].items():
            n = g["ids"].shape[0]
            assert g.attrs["dim"] == 16 and g.attrs["rows"] == 0, name
            assert g["param"].shape == (n, 16) and g["sum"].shape == (n, 16) and g["steps"].shape == (n,)
            assert np.all(g["sum"][...] >= 0) and np.all(g["steps"][...] >= 0)
            ids.setdefault(name, []).append(g["ids"][...])
assert sorted(ids) == [f"emb.slot{i}" for i in range(4)], sorted(ids)
for name, parts in ids.items():
    a = np.concatenate(parts)
    assert len(a) == len(np.unique(a)) > 100, f"{name}: a row is on two shards, or too few rows"
print("h5py: 4 tables, rows on exactly one shard each:", {k: sum(map(len, v)) for k, v in ids.items()})
PY

# shellcheck disable=SC2086
run_job stopped $ARGS "layer emb.features=0-3" --resume auto --servers 3
grep -q "shard restored table=emb.slot0 .*from_files=2" "$WORK/stopped.log" || fail "3 shards did not read the 2-shard tables"
same_as_ref stopped
echo "ok: SIGUSR1 -> checkpoint with tables, exit 85; --resume auto on 3 shards -> bit-identical"

# A job whose tables' optimizer differs from the checkpoint's is refused with the file and table named.
rc=0
"$TESSERA" train --run-dir "$WORK/stopped" $ARGS "layer emb.features=0-3" "layer emb.optimizer=adam" --resume auto \
    >"$WORK/bad.log" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "a resume with Adam rows from an AdaGrad checkpoint should fail"
grep -q "shard-[01].h5: table emb.slot[0-9] was trained with optimizer adagrad but the job says adam" "$WORK/bad.log" ||
    { tail -5 "$WORK/bad.log" >&2; fail "no clear error for a table shape mismatch"; }
echo "ok: mismatched table refused"
