#!/usr/bin/python3
"""Checks a running router's HTTP side (serve.metrics_listen) against what was sent to it: /metrics
parses with the Prometheus client library's own parser, and its counters, histograms and gauges move
exactly with 7 predictions of 10 rows and one request of the wrong width; /healthz, /readyz, 404, 405.

    serve_metrics.py ENDPOINT HTTP_HOST_PORT EXPECTED_VERSION
"""
import os
import sys
import urllib.error
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "client", "python"))
from tessera_client import Client, TesseraError  # noqa: E402

endpoint, http, version = sys.argv[1], "http://" + sys.argv[2], int(sys.argv[3])
failed = 0


def check(ok, what):
    global failed
    print(("ok: " if ok else "FAIL: ") + what)
    failed += not ok


def get(path, method="GET"):
    try:
        with urllib.request.urlopen(urllib.request.Request(http + path, method=method), timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def scrape():
    """{(name, frozenset(labels)): value} from /metrics, through prometheus_client's parser."""
    status, ctype, body = get("/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if k != "model"}
            out[(s.name, frozenset(labels.items()))] = s.value
    return out


def value(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0.0)


def settle(want_requests):
    """The page is rebuilt every 0.1 s: scrape until it shows `want_requests`, at most 5 s."""
    import time
    for _ in range(50):
        m = scrape()
        if value(m, "tessera_serve_requests_total") >= want_requests:
            return m
        time.sleep(0.1)
    return m


check(get("/healthz")[0] == 200, "/healthz is 200")
check(get("/readyz")[0] == 200, "/readyz is 200 once a version is served")
check(get("/nope")[0] == 404, "an unknown path is 404")
check(get("/metrics", "POST")[0] == 405, "POST is 405")

client = Client(endpoint)
before = settle(0)
r0 = value(before, "tessera_serve_requests_total")
rng = np.random.default_rng(1)
width = client.status()["input_dim"]
for _ in range(7):
    client.predict(rng.standard_normal((10, width)).astype(np.float32))
try:
    client.predict(np.zeros((3, width + 1), np.float32))
    check(False, "a request of the wrong width was answered")
except TesseraError as e:
    check(e.code_name == "INVALID_ARGUMENT", f"the wrong width is refused: {e}")
after = settle(r0 + 7)

d = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
check(d("tessera_serve_requests_total") == 7, f"requests_total +{d('tessera_serve_requests_total')}, sent 7")
check(d("tessera_serve_errors_total", code="INVALID_ARGUMENT") == 1,
      f"errors_total{{code=INVALID_ARGUMENT}} +{d('tessera_serve_errors_total', code='INVALID_ARGUMENT')}")
check(d("tessera_serve_request_duration_seconds_count") == 7, "the latency histogram counted the 7")
check(value(after, "tessera_serve_request_duration_seconds_bucket", le="+Inf") ==
      value(after, "tessera_serve_request_duration_seconds_count"), "latency +Inf bucket == count")
check(d("tessera_serve_request_duration_seconds_sum") > 0, "latency sum grew")
check(d("tessera_serve_batch_rows_sum") == 70, f"batch_rows_sum +{d('tessera_serve_batch_rows_sum')}, sent 70 rows")
check(d("tessera_serve_batches_total") == d("tessera_serve_batch_rows_count") >= 1, "batches == batch histogram count")
status = client.status()
check(value(after, "tessera_serve_requests_total") == status["requests"],
      f"requests_total {value(after, 'tessera_serve_requests_total')} == STATUS requests {status['requests']}")
check(value(after, "tessera_serve_default_version") == version, f"default_version is {version}")
check(value(after, "tessera_serve_version_info", version=str(version), state="AVAILABLE") == 1,
      "version_info shows it AVAILABLE")
ups = [v for (n, _), v in after.items() if n == "tessera_serve_replica_up"]
check(len(ups) == len(status["replicas"]) and all(v == 1 for v in ups), f"replica_up {ups}")
check(value(after, "tessera_serve_queue_capacity") > 0, "queue_capacity")
client.close()
sys.exit(1 if failed else 0)
