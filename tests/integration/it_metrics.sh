#!/bin/sh
# Prometheus metrics over HTTP. Training (job.metrics_listen): the scheduler serves the job's progress
# while it trains, and it parses with the Prometheus client's own parser. Serving
# (serve.metrics_listen): the router's metrics parse and move exactly with the requests sent
# (serve_metrics.py), health and readiness probes; /readyz says 503 while no version is loaded; a
# bad or busy address stops the router at start with a clear message.
. "$(dirname "$0")/lib.sh"

# Training: scraped twice while the job runs, the step moves on and the counters agree.
HT="127.0.0.1:$(free_port)"
start_job t --servers 2 --workers 2 job.epochs=3 data.train_limit=24000 data.test_limit=1000 \
    job.metrics_listen="$HT" job.progress_interval_s=0.5 --checkpoint-every 100
wait_log t "job metrics endpoint=http://$HT/metrics"
/usr/bin/python3 - "$HT" <<'PY' || fail "training metrics"
import sys, time, urllib.request
from prometheus_client.parser import text_string_to_metric_families

def scrape():
    body = urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            assert s.labels == {"job": "fashion_mlp"}, s.labels
            out[s.name] = s.value
    return out

def wait_for(cond, what):
    for _ in range(300):
        m = scrape()
        if cond(m):
            return m
        time.sleep(0.1)
    sys.exit("timed out waiting for " + what + ": " + repr(m))

a = wait_for(lambda m: m["tessera_train_step"] > 0, "a step")
b = wait_for(lambda m: m["tessera_checkpoints_total"] >= 1 and m["tessera_train_step"] > a["tessera_train_step"],
             "a checkpoint and more steps")
assert a["tessera_train_steps_planned"] == 561, a  # 3 epochs of 187 steps
assert b["tessera_train_examples_total"] >= 2 * 64 * b["tessera_train_step"], b
assert b["tessera_checkpoint_last_step"] % 100 == 0 and b["tessera_checkpoint_bytes_total"] > 0, b
assert b["tessera_train_loss"] > 0 and 0 < b["tessera_train_accuracy"] <= 1, b
print("ok: training metrics: step %d -> %d of %d, %d checkpoint(s), loss %.3f" % (
    a["tessera_train_step"], b["tessera_train_step"], b["tessera_train_steps_planned"],
    b["tessera_checkpoints_total"], b["tessera_train_loss"]))
PY
wait "$JOB_PID" || fail "the job with training metrics failed"

run_job m --servers 2 job.max_steps=100 data.test_limit=1000 --checkpoint-every 100
E="tcp://127.0.0.1:$(free_port)"
H="127.0.0.1:$(free_port)"
start_serve s "$E" --checkpoint "$WORK/m" --servers 2 serve.metrics_listen="$H"
grep -q "router metrics endpoint=http://$H/metrics" "$WORK/s.log" || fail "the router does not say where its metrics are"
TESSERA_PY_PROTO="$BUILD_DIR/python" /usr/bin/python3 "$(dirname "$0")/serve_metrics.py" "$E" "$H" 100 ||
    fail "serve_metrics.py"

# A second router on the same metrics address cannot start, and says why.
if "$TESSERA" serve --listen "tcp://127.0.0.1:$(free_port)" --run-dir "$WORK/busy" --checkpoint "$WORK/m" \
    --servers 1 serve.metrics_listen="$H" >"$WORK/busy.log" 2>&1; then
    fail "a router started on a metrics address in use"
fi
grep -q "serve.metrics_listen '$H': cannot listen there" "$WORK/busy.log" || { tail -5 "$WORK/busy.log" >&2; fail "unclear error for a busy metrics address"; }
stop_serve
echo "ok: a busy metrics address is refused at start"

if "$TESSERA" serve --listen "tcp://127.0.0.1:$(free_port)" --run-dir "$WORK/bad" --checkpoint "$WORK/m" \
    --servers 1 serve.metrics_listen=9464 >"$WORK/bad.log" 2>&1; then
    fail "serve.metrics_listen=9464 (no colon) accepted"
fi
grep -q "serve.metrics_listen '9464': expected HOST:PORT or :PORT" "$WORK/bad.log" || fail "unclear error for a malformed metrics address"
echo "ok: a malformed metrics address is refused"

# Before any version is loaded, /readyz is 503 (an empty checkpoint directory: nothing to serve yet).
mkdir -p "$WORK/empty/checkpoints"
H2="127.0.0.1:$(free_port)"
"$TESSERA" serve --listen "tcp://127.0.0.1:$(free_port)" --run-dir "$WORK/e" --checkpoint "$WORK/empty" \
    --servers 1 serve.metrics_listen="$H2" >"$WORK/e.log" 2>&1 &
SERVE_PID=$!
code=""
for _ in $(seq 100); do
    code=$(/usr/bin/python3 -c '
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen("http://" + sys.argv[1] + "/readyz", timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print("down")' "$H2")
    [ "$code" = down ] || break
    sleep 0.1
done
[ "$code" = 503 ] || { tail -5 "$WORK/e.log" >&2; fail "/readyz with nothing loaded: $code, expected 503"; }
stop_serve
echo "ok: /readyz is 503 while no version is loaded"
