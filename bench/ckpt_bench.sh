#!/usr/bin/env bash
# Checkpoint benchmark: how fast Tessera writes checkpoints compared with what the disk can do, and
# what checkpointing costs training, on a wide MLP (bench/wide_mlp.ini, 20M parameters, ~240 MB per
# checkpoint with Adam's two slots), in one run:
#
#   a) the filesystem's sequential write speed, with dd (conv=fdatasync, the file about one shard's
#      checkpoint in size; --dd-runs times, median), next to the run directory;
#   b) the wide job for --steps steps without checkpoints (baseline) and with a checkpoint every
#      --every steps, interleaved, --runs times each; per checkpoint the per-shard write throughput
#      (bytes / write_s), the aggregate (all shards' bytes / the slowest shard's write_s; shards write
#      concurrently), the stall (the largest shard snapshot time, stall_ms) and the step time
#      (workers' train_s / steps);
#   c) a table and the headline figures: checkpoint write MB/s vs disk MB/s (target >= 70%), stall
#      per checkpoint vs step time, the fraction of training time lost at every 500 steps (the
#      default of deploy/slurm/train.sbatch; target <= 5%) and at --every, and the end-to-end
#      slowdown (training time with checkpoints vs without, same steps);
#   d) (unless --no-diag) a diagnosis of the write path with Python, after the runs: one shard's
#      bytes written with a plain write() + fsync, with O_DIRECT + fsync (as checkpoint.direct_io
#      writes the large datasets), with h5py (the same libhdf5) + fsync, S writers at once, with every
#      core spinning, and again (plain, O_DIRECT, S writers) while a baseline job trains;
#      and the snapshot copy into freshly mapped memory (as a large malloc gives) vs mapped memory.
#
# Results go to bench/results/ckpt_bench.json.
#
# usage: bench/ckpt_bench.sh [--steps N] [--every K] [--servers S] [--workers W] [--runs R]
#                            [--dd-runs D] [--no-diag] [--keep]
#        BUILD_DIR=path/to/build TMPDIR=/path/on/the/disk/to/test bench/ckpt_bench.sh ...
set -euo pipefail

STEPS=120
EVERY=25
SERVERS=2
WORKERS=2
RUNS=2
DD_RUNS=3
DIAG=1
KEEP=0
DEFAULT_INTERVAL=500   # --checkpoint-every default in deploy/slurm/train.sbatch
usage() {
    cat <<EOF
usage: $0 [options]
  --steps N     training steps per run (default $STEPS)
  --every K     checkpoint every K steps in the checkpointed runs (default $EVERY)
  --servers S   parameter-server shards (default $SERVERS)
  --workers W   workers (default $WORKERS)
  --runs R      runs of each configuration (baseline, checkpointed), interleaved (default $RUNS)
  --dd-runs D   dd repetitions for the disk figure (default $DD_RUNS)
  --no-diag     skip the Python write-path diagnosis
  --keep        keep the temporary directory (logs, checkpoints)
env: BUILD_DIR (default build), TMPDIR (where the run directories and dd files go; default /tmp)
EOF
}
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="${2:?--steps needs a value}"; shift 2 ;;
        --steps=*) STEPS="${1#*=}"; shift ;;
        --every) EVERY="${2:?--every needs a value}"; shift 2 ;;
        --every=*) EVERY="${1#*=}"; shift ;;
        --servers) SERVERS="${2:?--servers needs a value}"; shift 2 ;;
        --servers=*) SERVERS="${1#*=}"; shift ;;
        --workers) WORKERS="${2:?--workers needs a value}"; shift 2 ;;
        --workers=*) WORKERS="${1#*=}"; shift ;;
        --runs) RUNS="${2:?--runs needs a value}"; shift 2 ;;
        --runs=*) RUNS="${1#*=}"; shift ;;
        --dd-runs) DD_RUNS="${2:?--dd-runs needs a value}"; shift 2 ;;
        --dd-runs=*) DD_RUNS="${1#*=}"; shift ;;
        --no-diag) DIAG=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "ckpt_bench.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for v in STEPS EVERY SERVERS WORKERS RUNS DD_RUNS; do
    case "${!v}" in ''|*[!0-9]*|0) echo "ckpt_bench.sh: --$(echo "$v" | tr 'A-Z_' 'a-z-') must be a positive integer" >&2; exit 2 ;; esac
done
[ "$EVERY" -lt "$STEPS" ] || { echo "ckpt_bench.sh: --every must be less than --steps" >&2; exit 2; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY=/usr/bin/python3
BUILD_DIR="${BUILD_DIR:-build}"
B="$BUILD_DIR/bin"
JOB=bench/wide_mlp.ini
OUT_DIR=bench/results
OUT_JSON="$OUT_DIR/ckpt_bench.json"
# Enough training data that --steps fit in few epochs (few evaluations); max_steps ends the run.
TRAIN_LIMIT=60000
TEST_LIMIT=1000

die() { echo "ckpt_bench.sh: $*" >&2; exit 1; }

# --- preconditions ------------------------------------------------------------
[ -x "$PY" ] || die "$PY not found (install with ./scripts/install-deps.sh)"
"$PY" -c 'import numpy' >/dev/null 2>&1 || die "numpy (python3-numpy) is missing"
command -v mpirun >/dev/null 2>&1 || die "mpirun not found (install with ./scripts/install-deps.sh)"
command -v dd >/dev/null 2>&1 || die "dd not found"
for b in tessera tessera-scheduler tessera-ps tessera-worker; do
    [ -x "$B/$b" ] || die "$B/$b not found: build Tessera first (or set BUILD_DIR)"
done
[ -f "$JOB" ] || die "$JOB not found"
if pgrep -x ctest >/dev/null 2>&1 || pgrep -x tessera-ps >/dev/null 2>&1; then
    echo "ckpt_bench.sh: WARNING: ctest or another Tessera job is running; the figures will be skewed" >&2
fi

if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tessera-ckpt-bench.XXXXXX")"
if [ "$KEEP" -eq 1 ]; then trap 'echo "kept $TMP"' EXIT; else trap 'rm -rf "$TMP"' EXIT; fi
FS_DEV="$(df -P "$TMP" | awk 'NR==2 {print $1}')"
FS_MNT="$(df -P "$TMP" | awk 'NR==2 {print $6}')"
FS_TYPE="$(df -PT "$TMP" | awk 'NR==2 {print $2}')"

# One shard's checkpoint size from the job file: parameters x (1 + Adam's 2 slots) x 4 bytes / S.
read -r N_PARAMS SHARD_BYTES < <("$PY" - "$JOB" "$SERVERS" <<'EOF'
import configparser, sys
c = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
c.read(sys.argv[1])
fan_in, n = int(c["model"]["input"]), 0
for sec in c.sections():
    if sec.startswith("layer ") and c[sec]["type"].strip() == "linear":
        out = int(c[sec]["out"]); n += fan_in * out + out; fan_in = out
slots = {"adam": 2, "sgd": 1, "momentum": 1}.get(c["optimizer"]["type"].strip(), 2)
print(n, n * (1 + slots) * 4 // int(sys.argv[2]))
EOF
)
[ -n "${SHARD_BYTES:-}" ] || die "cannot size the checkpoint from $JOB"
DD_BS=$((16 * 1024 * 1024))
DD_COUNT=$(( (SHARD_BYTES + DD_BS - 1) / DD_BS ))
DD_BYTES=$(( DD_COUNT * DD_BS ))

RAW="$TMP/raw.tsv"   # kind <TAB> ... (parsed by the report below)
: > "$RAW"

echo "ckpt_bench: job=$JOB params=$N_PARAMS (~$((SHARD_BYTES * SERVERS / 1000000)) MB/checkpoint, ~$((SHARD_BYTES / 1000000)) MB/shard)"
echo "            steps=$STEPS every=$EVERY servers=$SERVERS workers=$WORKERS runs=$RUNS cores=$(nproc) build=$BUILD_DIR"
echo "            run dirs under $TMP ($FS_DEV on $FS_MNT, $FS_TYPE)"

# --- a) disk sequential write ---------------------------------------------------
dd_secs() {  # dd's own elapsed seconds from its last line ("N bytes (...) copied, T s, R MB/s")
    sed -n 's/.* copied, \([0-9.e+-]*\) s,.*/\1/p' | tail -n 1
}
dd_one() {  # $1 = file, $2... = extra dd args; prints seconds
    dd if=/dev/zero of="$1" bs="$DD_BS" count="$DD_COUNT" "${@:2}" 2>&1 | dd_secs
}
echo "  disk: dd ${DD_COUNT} x 16 MiB = $((DD_BYTES / 1048576)) MiB, conv=fdatasync, 1 warm-up + $DD_RUNS runs (+ $SERVERS at once)"
# One warm-up run, reported but not counted: on VMs the first write after a while is often much
# slower (guest memory handed back to the host has to be faulted in again for the page cache).
sync; s="$(dd_one "$TMP/dd.bin" conv=fdatasync)"; rm -f "$TMP/dd.bin"
printf 'dd\twarmup\t1\t%s\t%s\n' "$DD_BYTES" "$s" >> "$RAW"
for r in $(seq 1 "$DD_RUNS"); do
    sync
    s="$(dd_one "$TMP/dd.bin" conv=fdatasync)"
    rm -f "$TMP/dd.bin"
    printf 'dd\tfdatasync\t%s\t%s\t%s\n' "$r" "$DD_BYTES" "$s" >> "$RAW"
    # The same number of writers as shards, at once (what a checkpoint does).
    sync
    pids=()
    for k in $(seq 1 "$SERVERS"); do
        ( dd_one "$TMP/ddp$k.bin" conv=fdatasync > "$TMP/ddp$k.s" ) &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    for k in $(seq 1 "$SERVERS"); do
        printf 'ddpar\t%s\t%s\t%s\t%s\n' "$r" "$k" "$DD_BYTES" "$(cat "$TMP/ddp$k.s")" >> "$RAW"
    done
    rm -f "$TMP"/ddp*.bin "$TMP"/ddp*.s
done
# For reference only: without a sync the figure is the page cache's, not the disk's; O_DIRECT
# bypasses the page cache (as checkpoint.direct_io = 1 does for the large datasets).
sync; s="$(dd_one "$TMP/dd.bin")"; rm -f "$TMP/dd.bin"
printf 'dd\tnosync\t1\t%s\t%s\n' "$DD_BYTES" "$s" >> "$RAW"
sync; s="$(dd_one "$TMP/dd.bin" oflag=direct 2>/dev/null || true)"; rm -f "$TMP/dd.bin"
[ -n "$s" ] && printf 'dd\tdirect\t1\t%s\t%s\n' "$DD_BYTES" "$s" >> "$RAW"
sync

# --- b) training runs -------------------------------------------------------------
run_job() {  # $1 = base|ckpt, $2 = run index
    local dir="$TMP/$1-run$2" log="$TMP/$1-run$2.log" extra=()
    [ "$1" = ckpt ] && extra=(--checkpoint-every "$EVERY")
    rm -rf "$dir"
    if ! "$B/tessera" train "$JOB" --servers "$SERVERS" --workers "$WORKERS" --run-dir "$dir" "${extra[@]}" \
            "job.max_steps=$STEPS" job.epochs=1000 "data.train_limit=$TRAIN_LIMIT" "data.test_limit=$TEST_LIMIT" \
            > "$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "$1 run $2 failed (log above)"
    fi
    [ -f "$dir/summary.json" ] || { tail -n 30 "$log" >&2; die "$1 run $2 wrote no summary.json"; }
    printf 'run\t%s\t%s\t%s\t%s\n' "$1" "$2" "$log" "$dir/summary.json" >> "$RAW"
    rm -rf "$dir/checkpoints"   # free the disk for the next run
    sync
}
for r in $(seq 1 "$RUNS"); do
    echo "  run $r/$RUNS: baseline (no checkpoints), $STEPS steps"; run_job base "$r"
    echo "  run $r/$RUNS: checkpoint every $EVERY steps";            run_job ckpt "$r"
done

# --- d) write-path diagnosis --------------------------------------------------------
DIAG_IDLE="$TMP/diag-idle.json"
DIAG_LOADED="$TMP/diag-loaded.json"
echo '{}' > "$DIAG_IDLE"; echo '{}' > "$DIAG_LOADED"
cat > "$TMP/diag.py" <<'EOF'
# usage: diag.py idle|loaded TMP SHARD_BYTES SERVERS OUT_JSON
import json, mmap, multiprocessing as mp, os, statistics, sys, time
import numpy as np
mode, tmp, nbytes, servers, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
n = nbytes // 4
data = np.arange(n, dtype=np.float32)          # one shard's param + 2 slots, as one buffer
thirds = np.array_split(data, 3)
res = {"bytes": n * 4}

def fsync_rename(tmpname, final):
    t = time.perf_counter()
    fd = os.open(tmpname, os.O_RDONLY); os.fsync(fd); os.close(fd)   # as ckpt.c: reopen, fsync, rename
    os.rename(tmpname, final)
    return time.perf_counter() - t

def plain(path):
    t0 = time.perf_counter()
    with open(path + ".tmp", "wb", buffering=0) as f:
        mv = memoryview(data).cast("B")
        off = 0
        while off < len(mv):
            off += f.write(mv[off:])
    tw = time.perf_counter() - t0
    ts = fsync_rename(path + ".tmp", path)
    os.remove(path)
    return tw, ts

# O_DIRECT from page-aligned memory, as ckpt.c writes the large datasets (checkpoint.direct_io = 1).
aligned = mmap.mmap(-1, (n * 4 + 4095) // 4096 * 4096)
aligned[:n * 4] = memoryview(data).cast("B")

def direct(path):
    t0 = time.perf_counter()
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT)
    mv = memoryview(aligned)
    off = 0
    while off < len(mv):
        off += os.pwrite(fd, mv[off:off + (64 << 20)], off)
    os.close(fd)
    tw = time.perf_counter() - t0
    ts = fsync_rename(path + ".tmp", path)
    os.remove(path)
    return tw, ts

def hdf5(path):
    import h5py
    t0 = time.perf_counter()
    with h5py.File(path + ".tmp", "w") as f:   # default (contiguous) layout, as ckpt.c
        g = f.create_group("slice")
        for name, part in zip(("param", "m", "v"), thirds):
            g.create_dataset(name, data=part)
    tw = time.perf_counter() - t0
    ts = fsync_rename(path + ".tmp", path)
    os.remove(path)
    return tw, ts

def summarize(pairs):
    tot = statistics.median(p[0] + p[1] for p in pairs)
    return {"write_s": round(statistics.median(p[0] for p in pairs), 4),
            "fsync_s": round(statistics.median(p[1] for p in pairs), 4), "total_s": round(tot, 4),
            "mb_per_s": round(n * 4 / tot / 1e6, 1),
            "runs_mb_per_s": [round(n * 4 / (a + b) / 1e6, 1) for a, b in pairs]}

def series(fn, name, reps=3, gap=0.0):
    pairs = []
    for _ in range(reps):
        os.sync()
        pairs.append(fn(os.path.join(tmp, name)))
        time.sleep(gap)
    return summarize(pairs)

def worker(k, q):
    q.put(plain(os.path.join(tmp, "diag-par%d.bin" % k)))

def parallel(reps=3, gap=0.0):
    aggs, per = [], []
    for _ in range(reps):
        os.sync()
        q = mp.Queue()
        ps = [mp.Process(target=worker, args=(k, q)) for k in range(servers)]
        for p in ps: p.start()
        got = [q.get() for _ in ps]
        for p in ps: p.join()
        aggs.append(servers * n * 4 / max(a + b for a, b in got) / 1e6)
        per += [n * 4 / (a + b) / 1e6 for a, b in got]
        time.sleep(gap)
    return {"aggregate_mb_per_s": round(statistics.median(aggs), 1),
            "per_writer_mb_per_s": round(statistics.median(per), 1),
            "runs_aggregate_mb_per_s": [round(x, 1) for x in aggs]}

if mode == "loaded":
    # Run while a training job runs: the conditions a checkpoint is written in.
    res["plain_write_fsync"] = series(plain, "diag-load.bin", gap=0.5)
    res["direct_write_fsync"] = series(direct, "diag-load-direct.bin", gap=0.5)
    res["plain_parallel"] = parallel(gap=0.5)
    json.dump(res, open(out, "w"))
    sys.exit(0)

res["plain_write_fsync"] = series(plain, "diag-plain.bin")
res["direct_write_fsync"] = series(direct, "diag-direct.bin")
try:
    import h5py  # noqa: F401
    res["h5py_write_fsync"] = series(hdf5, "diag-h5.h5")
except ImportError:
    res["h5py_write_fsync"] = None
res["plain_parallel"] = parallel()

# The same write while every core spins in user space: plain CPU contention.
def burn(stop):
    x = 0
    while not stop.is_set():
        x += 1
stop = mp.Event()
burners = [mp.Process(target=burn, args=(stop,)) for _ in range(os.cpu_count() or 1)]
for b in burners: b.start()
time.sleep(0.2)
try:
    res["plain_write_fsync_cores_busy"] = series(plain, "diag-busy.bin")
finally:
    stop.set()
    for b in burners: b.join()

# The snapshot (the stall): copy one shard's state into freshly mapped memory (what a large malloc
# gives: every 4 KiB page faults on first touch; glibc does not ask for huge pages) vs into memory
# that is already mapped.
fresh, reused = [], []
for _ in range(3):
    t = time.perf_counter()
    m = mmap.mmap(-1, n * 4)
    b = np.frombuffer(m, dtype=np.float32)
    np.copyto(b, data)
    fresh.append(time.perf_counter() - t)
    t = time.perf_counter(); np.copyto(b, data); reused.append(time.perf_counter() - t)
    del b; m.close()
res["snapshot_copy_fresh_ms"] = round(statistics.median(fresh) * 1e3, 2)
res["snapshot_copy_reused_ms"] = round(statistics.median(reused) * 1e3, 2)
json.dump(res, open(out, "w"))
EOF
if [ "$DIAG" -eq 1 ]; then
    echo "  diagnosis (idle): $((SHARD_BYTES / 1000000)) MB with write()+fsync, h5py+fsync, $SERVERS writers at once, cores busy, snapshot copy"
    "$PY" "$TMP/diag.py" idle "$TMP" "$SHARD_BYTES" "$SERVERS" "$DIAG_IDLE"
    # The same writes from outside Tessera while a baseline job trains (no checkpoints).
    LSTEPS=60
    echo "  diagnosis (under load): the same writes while a baseline job trains $LSTEPS steps"
    dir="$TMP/load-run" log="$TMP/load-run.log"
    "$B/tessera" train "$JOB" --servers "$SERVERS" --workers "$WORKERS" --run-dir "$dir" \
        "job.max_steps=$LSTEPS" job.epochs=1000 "data.train_limit=$TRAIN_LIMIT" "data.test_limit=$TEST_LIMIT" \
        > "$log" 2>&1 &
    lpid=$!
    for _ in $(seq 1 300); do   # until training has started (worker 0 logs the plan), at most 60 s
        grep -q 'training examples=' "$log" 2>/dev/null && break
        kill -0 "$lpid" 2>/dev/null || break
        sleep 0.2
    done
    sleep 2
    "$PY" "$TMP/diag.py" loaded "$TMP" "$SHARD_BYTES" "$SERVERS" "$DIAG_LOADED"
    if grep -q 'worker done' "$log"; then
        echo "ckpt_bench.sh: warning: the load job ended before the loaded writes did" >&2
        "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["warning"]="job ended early"; json.dump(d,open(sys.argv[1],"w"))' "$DIAG_LOADED"
    fi
    wait "$lpid" || { tail -n 30 "$log" >&2; die "the load job failed (log above)"; }
fi

# --- c) report ----------------------------------------------------------------------
mkdir -p "$OUT_DIR"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
CPU="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || true)"
MOUNT_OPTS="$(awk -v m="$FS_MNT" '$2 == m {print $4}' /proc/mounts | tail -n 1)"

"$PY" - "$RAW" "$OUT_JSON" "$DIAG_IDLE" "$DIAG_LOADED" "$STEPS" "$EVERY" "$SERVERS" "$WORKERS" "$RUNS" "$DEFAULT_INTERVAL" \
       "$COMMIT" "$CPU" "$(nproc)" "$N_PARAMS" "$FS_DEV" "$FS_MNT" "$FS_TYPE" "$MOUNT_OPTS" "$JOB" \
       "$TRAIN_LIMIT" <<'EOF'
import json, re, statistics, sys, time
(raw, out, diag_path, diag_loaded_path, steps, every, servers, workers, runs, dflt, commit, cpu, cores,
 n_params, fs_dev, fs_mnt, fs_type, mount_opts, job, train_limit) = sys.argv[1:21]
steps, every, servers, workers, runs, dflt = map(int, (steps, every, servers, workers, runs, dflt))
med = statistics.median
MB = 1e6
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]

# disk
dd = {}
for r in rows:
    if r[0] == "dd":
        dd.setdefault(r[1], []).append(int(r[3]) / float(r[4]) / MB)
par = {}
for r in rows:
    if r[0] == "ddpar":
        par.setdefault(r[1], []).append((int(r[3]), float(r[4])))
dd_par = [sum(b for b, _ in v) / max(s for _, s in v) / MB for v in par.values()]
disk = med(dd["fdatasync"])
disk_par = med(dd_par) if dd_par else None

kv = re.compile(r"(\w+)=(\S+)")
def parse(log):
    shards, commits, wdone = {}, {}, []
    for line in open(log, errors="replace"):
        f = line.split()
        if len(f) < 5:
            continue
        role, rank, msg = f[2], f[3], " ".join(f[4:])
        d = dict(kv.findall(msg))
        if role == "ps" and msg.startswith("checkpoint slice written"):
            shards.setdefault(int(d["step"]), []).append(
                {"rank": int(rank), "bytes": int(d["bytes"]), "write_s": float(d["write_s"]),
                 "stall_ms": float(d["stall_ms"])})
        elif role == "scheduler" and msg.startswith("checkpoint committed"):
            commits[int(d["step"])] = {"bytes": int(d["bytes"]), "write_s": float(d["write_s"]),
                                       "stall_ms": float(d["stall_ms"])}
        elif role == "worker" and msg.startswith("worker done"):
            wdone.append({"rank": int(rank), "steps": int(d["steps"]), "train_s": float(d["train_s"]),
                          "compute_s": float(d["compute_s"]), "sync_s": float(d["sync_s"])})
    return shards, commits, wdone

runs_out = {"base": [], "ckpt": []}
ckpts = []
for r in rows:
    if r[0] != "run":
        continue
    kind, idx, log, summ = r[1], int(r[2]), r[3], r[4]
    s = json.load(open(summ))
    shards, commits, wdone = parse(log)
    if len(wdone) != workers:
        sys.exit("ckpt_bench: %s run %d: %d 'worker done' lines, expected %d" % (kind, idx, len(wdone), workers))
    wsteps = max(w["steps"] for w in wdone)
    train_s = max(w["train_s"] for w in wdone)      # BSP: the slowest worker's training time
    run = {"run": idx, "steps": wsteps, "train_s": train_s, "step_ms": train_s / wsteps * 1e3,
           "compute_s": max(w["compute_s"] for w in wdone), "sync_s": max(w["sync_s"] for w in wdone),
           "summary_train_seconds": s["train_seconds"], "checkpoints": s["checkpoints"],
           "summary_checkpoint_bytes": s["checkpoint_bytes"], "summary_checkpoint_write_s": s["checkpoint_write_s"],
           "summary_checkpoint_stall_s": s["checkpoint_stall_s"]}
    if kind == "ckpt":
        n_in = 0
        for step in sorted(shards):
            sh = shards[step]
            if len(sh) != servers:
                print("warning: run %d step %d: %d shard lines, expected %d" % (idx, step, len(sh), servers))
            tot = sum(x["bytes"] for x in sh)
            slow = max(x["write_s"] for x in sh)
            c = {"run": idx, "step": step, "bytes": tot,
                 "shard_bytes": [x["bytes"] for x in sh],
                 "shard_write_s": [x["write_s"] for x in sh],
                 "shard_mb_per_s": [round(x["bytes"] / x["write_s"] / MB, 1) if x["write_s"] > 0 else None for x in sh],
                 "aggregate_mb_per_s": round(tot / slow / MB, 1) if slow > 0 else None,
                 "stall_ms": max(x["stall_ms"] for x in sh),
                 "committed_stall_ms": commits.get(step, {}).get("stall_ms"),
                 "committed_write_s": commits.get(step, {}).get("write_s"),
                 "during_training": step < wsteps}
            n_in += step < wsteps
            ckpts.append(c)
        run["checkpoints_during_training"] = n_in
        if len(commits) != len(shards):
            print("warning: run %d: %d checkpoints committed, %d written" % (idx, len(commits), len(shards)))
    runs_out[kind].append(run)

if not ckpts:
    sys.exit("ckpt_bench: no 'checkpoint slice written' lines in the checkpointed runs' logs")
diag = json.load(open(diag_path))
diag_loaded = json.load(open(diag_loaded_path))

shard_rates = [x for c in ckpts for x in c["shard_mb_per_s"] if x]
agg_rates = [c["aggregate_mb_per_s"] for c in ckpts if c["aggregate_mb_per_s"]]
stalls = [c["stall_ms"] for c in ckpts]
step_base = med([r["step_ms"] for r in runs_out["base"]])
step_ckpt = med([r["step_ms"] for r in runs_out["ckpt"]])
train_base = med([r["train_s"] for r in runs_out["base"]])
train_ckpt = med([r["train_s"] for r in runs_out["ckpt"]])
shard_mb, agg_mb, stall_ms = med(shard_rates), med(agg_rates), med(stalls)
ratio = agg_mb / disk
# Per-run pairs (baseline r, checkpointed r) for the end-to-end cost per checkpoint.
slowdown = train_ckpt / train_base - 1
n_in = med([r["checkpoints_during_training"] for r in runs_out["ckpt"]])
cost_per_ckpt_s = (train_ckpt - train_base) / n_in if n_in else None
def frac(cost_s, k):
    return cost_s / (cost_s + k * step_base / 1e3)
stall_s = stall_ms / 1e3

res = {
    "benchmark": "ckpt_bench",
    "job": job, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "commit": commit, "cpu": cpu, "cores": int(cores),
    "params": int(n_params), "servers": servers, "workers": workers, "steps": steps,
    "checkpoint_every": every, "default_checkpoint_every": dflt, "runs_per_config": runs,
    "data_train_limit": int(train_limit), "statistic": "median", "mb": "1e6 bytes",
    "filesystem": {"device": fs_dev, "mount": fs_mnt, "type": fs_type, "options": mount_opts},
    "disk": {
        "dd_fdatasync_mb_per_s_runs": [round(x, 1) for x in dd["fdatasync"]],
        "dd_fdatasync_mb_per_s": round(disk, 1),
        "dd_parallel_fdatasync_aggregate_mb_per_s_runs": [round(x, 1) for x in dd_par],
        "dd_parallel_fdatasync_aggregate_mb_per_s": round(disk_par, 1) if disk_par else None,
        "dd_warmup_fdatasync_mb_per_s_not_counted": round(dd["warmup"][0], 1) if "warmup" in dd else None,
        "dd_nosync_mb_per_s_page_cache_only": round(dd["nosync"][0], 1) if "nosync" in dd else None,
        "dd_odirect_mb_per_s": round(dd["direct"][0], 1) if "direct" in dd else None,
        "bytes_per_dd": int([r for r in rows if r[0] == "dd"][0][3]),
    },
    "checkpoints": ckpts,
    "runs": runs_out,
    "headline": {
        "checkpoint_bytes": med([c["bytes"] for c in ckpts]),
        "shard_write_mb_per_s": round(shard_mb, 1),
        "aggregate_write_mb_per_s": round(agg_mb, 1),
        "disk_mb_per_s": round(disk, 1),
        "write_vs_disk": round(ratio, 3),
        "write_vs_disk_range_over_dd_runs": [round(agg_mb / max(dd["fdatasync"]), 3), round(agg_mb / min(dd["fdatasync"]), 3)],
        "write_vs_disk_target": 0.70, "write_vs_disk_ok": ratio >= 0.70,
        "aggregate_vs_parallel_dd": round(agg_mb / disk_par, 3) if disk_par else None,
        "stall_ms": round(stall_ms, 2),
        "step_ms_baseline": round(step_base, 1),
        "step_ms_with_checkpoints": round(step_ckpt, 1),
        "stall_vs_step": round(stall_ms / step_base, 3),
        "stall_fraction_at_default_interval": round(frac(stall_s, dflt), 5),
        "stall_fraction_at_run_interval": round(frac(stall_s, every), 5),
        "stall_fraction_target": 0.05,
        "stall_fraction_at_default_interval_ok": frac(stall_s, dflt) <= 0.05,
        "train_s_baseline": round(train_base, 2), "train_s_with_checkpoints": round(train_ckpt, 2),
        "slowdown": round(slowdown, 4),
        "checkpoints_during_training": n_in,
        "effective_cost_per_checkpoint_s": round(cost_per_ckpt_s, 3) if cost_per_ckpt_s is not None else None,
        "effective_fraction_at_default_interval": round(frac(cost_per_ckpt_s, dflt), 5) if cost_per_ckpt_s else None,
        "effective_fraction_at_run_interval": round(frac(cost_per_ckpt_s, every), 5) if cost_per_ckpt_s else None,
    },
    "diagnosis": {"idle": diag, "under_training_load": diag_loaded},
}
with open(out, "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")

h = res["headline"]
print()
print("Checkpoint benchmark: %s, %s params, %d shards, %d workers, %d steps, every %d; %s cores (%s)"
      % (job, n_params, servers, workers, steps, every, cores, cpu or "cpu?"))
print("filesystem: %s on %s (%s, %s)" % (fs_dev, fs_mnt, fs_type, mount_opts))
print()
print("disk, dd %d MB conv=fdatasync: %s MB/s  -> median %.0f MB/s" % (
    res["disk"]["bytes_per_dd"] / MB, " ".join("%.0f" % x for x in dd["fdatasync"]), disk))
if disk_par:
    print("disk, %d dd at once, aggregate:   %s MB/s  -> median %.0f MB/s" % (
        servers, " ".join("%.0f" % x for x in dd_par), disk_par))
if res["disk"]["dd_nosync_mb_per_s_page_cache_only"]:
    print("  (not counted: warm-up %s MB/s; no sync %.0f MB/s = page cache, not disk; O_DIRECT %s MB/s)" % (
        "%.0f" % dd["warmup"][0] if "warmup" in dd else "n/a", res["disk"]["dd_nosync_mb_per_s_page_cache_only"],
        "%.0f" % res["disk"]["dd_odirect_mb_per_s"] if res["disk"]["dd_odirect_mb_per_s"] else "n/a"))
print()
print("%-4s %6s %9s  %-24s %-18s %10s %9s %9s" % ("run", "step", "MB", "shard write_s", "shard MB/s",
                                                  "aggr MB/s", "stall_ms", "commit_ms"))
for c in ckpts:
    print("%-4d %6d %9.1f  %-24s %-18s %10.0f %9.2f %9s" % (
        c["run"], c["step"], c["bytes"] / MB, " ".join("%.3f" % x for x in c["shard_write_s"]),
        " ".join("%.0f" % x for x in c["shard_mb_per_s"] if x), c["aggregate_mb_per_s"] or 0, c["stall_ms"],
        "%.2f" % c["committed_stall_ms"] if c["committed_stall_ms"] is not None else "-"))
print()
print("%-12s %4s %6s %9s %9s %10s %9s %6s" % ("config", "run", "steps", "train_s", "step_ms", "compute_s", "sync_s", "ckpts"))
for kind in ("base", "ckpt"):
    for r in runs_out[kind]:
        print("%-12s %4d %6d %9.2f %9.1f %10.2f %9.2f %6d" % (
            "baseline" if kind == "base" else "every %d" % every, r["run"], r["steps"], r["train_s"],
            r["step_ms"], r["compute_s"], r["sync_s"], r["checkpoints"]))
print()
print("checkpoint write: %.0f MB/s per shard, %.0f MB/s aggregate (%d shards) vs disk %.0f MB/s = %.0f%% (target >= 70%%: %s)"
      % (shard_mb, agg_mb, servers, disk, 100 * ratio, "ok" if ratio >= 0.70 else "MISSED"))
print("  (%.0f%% to %.0f%% against the slowest and fastest dd run)" % (100 * agg_mb / max(dd["fdatasync"]),
                                                                     100 * agg_mb / min(dd["fdatasync"])))
if disk_par:
    print("  vs %d dd writers at once (%.0f MB/s): %.0f%%" % (servers, disk_par, 100 * agg_mb / disk_par))
if res["disk"]["dd_odirect_mb_per_s"]:
    print("  vs one dd oflag=direct (%.0f MB/s; checkpoint.direct_io writes that way): %.0f%%"
          % (res["disk"]["dd_odirect_mb_per_s"], 100 * agg_mb / res["disk"]["dd_odirect_mb_per_s"]))
print("stall per checkpoint: %.1f ms = %.2f steps of %.0f ms; training time lost: %.3f%% every %d steps (target <= 5%%: %s), %.2f%% every %d steps"
      % (stall_ms, stall_ms / step_base, step_base, 100 * frac(stall_s, dflt), dflt,
         "ok" if frac(stall_s, dflt) <= 0.05 else "MISSED", 100 * frac(stall_s, every), every))
print("end-to-end: train %.2f s with checkpoints vs %.2f s without, same %d steps: slowdown %+.1f%% (%s checkpoints during training)"
      % (train_ckpt, train_base, steps, 100 * slowdown, n_in))
if cost_per_ckpt_s is not None:
    print("  = %.2f s per checkpoint (%.1f steps; the stall is %.3f s): %.2f%% of training time every %d steps, %.2f%% every %d"
          % (cost_per_ckpt_s, cost_per_ckpt_s * 1e3 / step_base, stall_s, 100 * frac(cost_per_ckpt_s, dflt), dflt,
             100 * frac(cost_per_ckpt_s, every), every))
if diag:
    def wf(name, d):
        print("  %-34s write %.3f s + fsync %.3f s = %4.0f MB/s  (runs %s)" % (
            name, d["write_s"], d["fsync_s"], d["mb_per_s"], " ".join("%.0f" % x for x in d["runs_mb_per_s"])))
    print()
    print("diagnosis, one shard's %.0f MB from Python (reopen + fsync + rename as ckpt.c):" % (diag["bytes"] / MB))
    wf("idle, write()+fsync:", diag["plain_write_fsync"])
    if diag.get("direct_write_fsync"):
        wf("idle, O_DIRECT+fsync:", diag["direct_write_fsync"])
    if diag.get("h5py_write_fsync"):
        wf("idle, h5py (same libhdf5)+fsync:", diag["h5py_write_fsync"])
    print("  %-34s %.0f MB/s aggregate, %.0f MB/s per writer" % ("idle, %d writers at once:" % servers,
          diag["plain_parallel"]["aggregate_mb_per_s"], diag["plain_parallel"]["per_writer_mb_per_s"]))
    wf("idle, all cores spinning:", diag["plain_write_fsync_cores_busy"])
    if diag_loaded:
        wf("while training, write()+fsync:", diag_loaded["plain_write_fsync"])
        if diag_loaded.get("direct_write_fsync"):
            wf("while training, O_DIRECT+fsync:", diag_loaded["direct_write_fsync"])
        print("  %-34s %.0f MB/s aggregate, %.0f MB/s per writer%s" % ("while training, %d at once:" % servers,
              diag_loaded["plain_parallel"]["aggregate_mb_per_s"], diag_loaded["plain_parallel"]["per_writer_mb_per_s"],
              "  (WARNING: %s)" % diag_loaded["warning"] if diag_loaded.get("warning") else ""))
    print("  snapshot copy: %.1f ms into fresh memory (page faults), %.1f ms into mapped memory (shard stall %.1f ms)"
          % (diag["snapshot_copy_fresh_ms"], diag["snapshot_copy_reused_ms"], stall_ms))
print()
print("wrote %s" % out)
EOF
