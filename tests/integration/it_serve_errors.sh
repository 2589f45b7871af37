#!/bin/sh
# Bad requests to the router get a clear error reply with the right code, and the server stays up:
# wrong shape, width or dtype, unknown model or version, garbage bytes, a wrong protocol version,
# oversized messages, unknown request kinds, and peers that send junk and vanish
# (tests/integration/serve_errors.py, through the Python client's protocol module). Then the Python
# client's example classifies 500 test images.
. "$(dirname "$0")/lib.sh"

run_job e --servers 2 job.max_steps=100 data.test_limit=1000 --checkpoint-every 100
E="tcp://127.0.0.1:$(free_port)"
start_serve s "$E" --checkpoint "$WORK/e" --servers 2 serve.max_request_mb=2
MAX_REQUEST_MB=2 TESSERA_PY_PROTO="$BUILD_DIR/python" /usr/bin/python3 "$(dirname "$0")/serve_errors.py" "$E" ||
    fail "serve_errors.py"
# The Python client's example classifies real images through the same router.
TESSERA_PY_PROTO="$BUILD_DIR/python" PYTHONPATH="$(dirname "$0")/../../client/python" \
    /usr/bin/python3 "$(dirname "$0")/../../client/python/example_predict.py" "$E" 500 >"$WORK/example.out" ||
    fail "example_predict.py failed"
tail -1 "$WORK/example.out"
grep -Eq "accuracy 0\.[6-9]" "$WORK/example.out" || fail "the Python example's accuracy is off: $(tail -1 "$WORK/example.out")"
kill -0 "$SERVE_PID" || fail "tessera serve died"
grep -q "router stopping" "$WORK/s.log" && fail "the router stopped"
stop_serve
echo "ok: every bad request answered with its error; the router stayed up"
