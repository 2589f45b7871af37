#!/bin/sh
# Killing one shard replica under load: the router fails over to the other replica (under 0.1% failed
# requests), `tessera serve` restarts the dead one, and it rejoins (every replica up again, and the
# restarted one answers INFER requests). The linear layers are evaluated on the shards
# (serve.cache_mb=0), so every request crosses them.
. "$(dirname "$0")/lib.sh"

run_job f --servers 2 job.max_steps=200 data.test_limit=1000 --checkpoint-every 200
E="tcp://127.0.0.1:$(free_port)"
start_serve s "$E" --checkpoint "$WORK/f" --servers 2 --replicas 2 serve.cache_mb=0
"$TESSERA" loadtest --endpoint "$E" --concurrency 8 --duration 8 --warmup 0 --json --quiet >"$WORK/load.json" &
LOAD=$!
sleep 3
victim=$(pgrep -f "tessera-ps --serve --listen ipc://.*/shard-0-1.sock")
[ -n "$victim" ] || fail "no replica 0.1 to kill"
kill -9 "$victim"
echo "killed shard 0 replica 1 (pid $victim) under load"
wait "$LOAD" || fail "loadtest failed"
/usr/bin/python3 - "$WORK/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
failed = sum(r["errors"].values()) + r["timeouts"]
total = r["ok"] + failed
print(f"loadtest: ok={r['ok']} failed={failed} ({100.0 * failed / total:.3f}%) p99_us={r['latency_us']['p99']}")
assert total > 1000, "too few requests"
assert failed / total < 0.001, f"{failed} of {total} requests failed: {r['error_messages']}"
print("ok: under 0.1% failed requests while a replica died")
PY
grep -q "shard 0.1 killed by signal 9; restarting" "$WORK/s.log" || fail "the replica was not restarted"
"$TESSERA" status --endpoint "$E" >"$WORK/after.json"
/usr/bin/python3 - "$WORK/after.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
down = [r for r in s["replicas"] if not r.get("up")]
assert not down, f"replicas still down: {down}"
print("ok: all 4 replicas up again")
PY
# The restarted replica takes requests again: it loaded the version it serves.
"$TESSERA" loadtest --endpoint "$E" --concurrency 4 --duration 2 --warmup 0 --json --quiet >"$WORK/load2.json"
grep -q "serving shard loaded version=200" "$WORK/s/shard-0-1.log" || fail "restarted replica did not reload"
[ "$(grep -c 'serving shard loaded version=200' "$WORK/s/shard-0-1.log")" -ge 2 ] || fail "no reload after restart"
json "$WORK/load2.json" ok >/dev/null
echo "ok: the restarted replica reloaded version 200 and rejoined"
stop_serve
grep -Eq "serving shard stopping shard=0 infer_requests=[1-9]" "$WORK/s/shard-0-1.log" ||
    fail "the restarted replica answered no INFER requests"
echo "ok: the restarted replica answered INFER requests after rejoining"
