#!/bin/sh
# A new checkpoint arriving while `tessera loadtest` runs is loaded beside the serving version and
# swapped in: zero failed requests, and the served version changes. The old version is then unloaded
# (a request pinned to it gets NOT_FOUND), and a request pinned to the new one is answered by it.
. "$(dirname "$0")/lib.sh"

run_job v --servers 2 job.max_steps=300 data.test_limit=1000 --checkpoint-every 100
SRC="$WORK/v/checkpoints"
DIR="$WORK/watched"
mkdir -p "$DIR"
cp -r "$SRC/step-000000100" "$DIR/"
E="tcp://127.0.0.1:$(free_port)"
start_serve s "$E" --checkpoint "$DIR" --servers 2 serve.poll_s=0.2
[ "$(json "$WORK/s.status.json" default_version)" = 100 ] || fail "not serving step 100 first"

"$TESSERA" loadtest --endpoint "$E" --concurrency 4 --duration 6 --warmup 0 --json --quiet >"$WORK/load.json" &
LOAD=$!
sleep 2
# A checkpoint appears the way a training job commits one: its files first, the manifest last.
mkdir "$DIR/step-000000300"
cp "$SRC/step-000000300/"shard-*.h5 "$SRC/step-000000300/"worker-*.h5 "$DIR/step-000000300/"
sleep 0.5
cp "$SRC/step-000000300/manifest.h5" "$DIR/step-000000300/manifest.h5.tmp"
mv "$DIR/step-000000300/manifest.h5.tmp" "$DIR/step-000000300/manifest.h5"
wait "$LOAD" || fail "loadtest failed"

/usr/bin/python3 - "$WORK/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"loadtest: ok={r['ok']} errors={r['errors']} timeouts={r['timeouts']} versions={r['versions']} "
      f"first_seen={r['version_first_seen_s']}")
assert r["ok"] > 100, "too few requests"
assert sum(r["errors"].values()) == 0 and r["timeouts"] == 0, f"failed requests: {r['errors']} {r['error_messages']}"
assert set(r["versions"]) == {"100", "300"}, f"versions seen: {r['versions']}"
assert r["version_first_seen_s"]["300"] > r["version_first_seen_s"]["100"]
print("ok: zero failed requests while the version changed from 100 to 300")
PY
sleep 1.5 # the retired version's grace period
"$TESSERA" status --endpoint "$E" >"$WORK/after.json"
/usr/bin/python3 - "$WORK/after.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["default_version"] == 300, s
assert [v["version"] for v in s["versions"]] == [300], f"old version not unloaded: {s['versions']}"
print("ok: serving 300; 100 unloaded")
PY
printf '%s\n' "$(/usr/bin/python3 -c 'print(",".join(["0"] * 784))')" >"$WORK/zero.csv"
"$TESSERA" predict --endpoint "$E" --input "$WORK/zero.csv" --version 300 >"$WORK/pin.jsonl" || fail "pinned predict"
grep -q '"version": *300' "$WORK/pin.jsonl" || fail "pinned request not answered by 300: $(cat "$WORK/pin.jsonl")"
if "$TESSERA" predict --endpoint "$E" --input "$WORK/zero.csv" --version 100 >/dev/null 2>"$WORK/pin.err"; then
    fail "a request pinned to the unloaded version 100 succeeded"
fi
grep -q NOT_FOUND "$WORK/pin.err" || fail "expected NOT_FOUND: $(cat "$WORK/pin.err")"
echo "ok: pinned requests: 300 answers, 100 is NOT_FOUND ($(head -c 120 "$WORK/pin.err"))"
stop_serve
