#!/bin/sh
# The router's HTTP side for operators (serve.metrics_listen): Prometheus metrics that parse with the
# Prometheus client's own parser and move exactly with the requests sent (serve_metrics.py), health
# and readiness probes; /readyz says 503 while no version is loaded; a bad or busy address stops the
# router at start with a clear message.
. "$(dirname "$0")/lib.sh"

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
