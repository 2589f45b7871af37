#!/usr/bin/python3
"""Sends malformed and invalid requests to a running router and checks each error code; after every
case (and at the end) a valid PREDICT and a LIVE must still succeed. Exits 0 when all pass.

    serve_errors.py ENDPOINT [MODEL]

MAX_REQUEST_MB: the router's serve.max_request_mb (default 64), for the size-limit cases; start the
router with a small one (2) to keep them cheap. Needs tessera_pb2 (see client/python/tessera_client.py).
"""
import os
import socket
import sys
import time

import numpy as np
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "client", "python"))
from tessera_client import Client, TesseraError, code_name, pb  # noqa: E402

TIMEOUT_MS = 5000
MiB = 1 << 20


def header(kind=pb.KIND_PREDICT, version=pb.PROTOCOL_VERSION_CURRENT, **fields):
    return pb.Header(version=version, kind=kind, **fields)


def desc(h, shape, dtype=pb.DTYPE_F32, nbytes=None):
    n = 4 * int(np.prod(shape)) if nbytes is None else nbytes
    h.tensors.add(dtype=dtype, shape=list(shape), nbytes=n)
    return h


class Tester:
    def __init__(self, endpoint, model):
        self.endpoint, self.model = endpoint, model
        self.ctx = zmq.Context.instance()
        self.client = Client(endpoint, timeout_ms=TIMEOUT_MS)
        self.next_id = 1000
        self.failed = 0

    def raw_socket(self):
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.endpoint)
        return s

    def request(self, frames_fn):
        """Sends frames_fn(request_id) (a list whose frame 0 is a Header or bytes) on a fresh DEALER;
        returns the reply header whose request_id is ours, or 0 (a router that could not read it), or
        None after TIMEOUT_MS."""
        rid = self.next_id = self.next_id + 1
        frames = frames_fn(rid)
        if isinstance(frames[0], pb.Header):
            frames[0].request_id = rid
            frames[0] = frames[0].SerializeToString()
        s = self.raw_socket()
        try:
            s.send_multipart(frames)
            end = time.monotonic() + TIMEOUT_MS / 1000
            while (left := end - time.monotonic()) > 0 and s.poll(int(left * 1000) + 1):
                try:
                    reply = pb.Header.FromString(s.recv_multipart()[0])
                except Exception:  # DecodeError: a reply that does not parse answers nothing
                    continue
                if reply.request_id in (rid, 0):
                    return reply
            return None
        finally:
            s.close()

    def healthy(self, after):
        """A valid PREDICT and LIVE succeed; exits when not (the rest would fail for the same reason)."""
        try:
            p = self.client.predict(np.zeros((1, self.input_dim), np.float32), self.model)
            if p.logits.shape != (1, self.outputs):
                raise TesseraError("PROTOCOL", f"logits of shape {p.logits.shape}, want (1, {self.outputs})")
            if not self.client.live():
                raise TesseraError("TIMEOUT", "LIVE got no reply")
        except TesseraError as e:
            print(f"FAIL after {after}: the server no longer serves: {e}")
            sys.exit(1)

    def expect(self, name, want, frames_fn):
        reply = self.request(frames_fn)
        if reply is None:
            got = f"no reply within {TIMEOUT_MS} ms"
        elif reply.kind != pb.KIND_ERROR:
            got = f"reply kind {pb.Kind.Name(reply.kind) if reply.kind in pb.Kind.values() else reply.kind}"
        elif code_name(reply.error_code) != want:
            got = f'{code_name(reply.error_code)} "{reply.error_message}"'
        elif not reply.error_message:
            got = f"{want} without an error_message"
        elif reply.version != pb.PROTOCOL_VERSION_CURRENT:
            got = f"{want} in a reply of protocol version {reply.version}"
        else:
            print(f'ok   {name}: {want} "{reply.error_message}"')
            got = None
        if got is not None:
            print(f"FAIL {name}: want {want}, got {got}")
            self.failed += 1
        self.healthy(name)

    def survive(self, name, action):
        """Runs action (something no reply is owed for); then the server must still serve."""
        detail = action()
        self.healthy(name)
        print(f"ok   {name}: {detail}; still serving")


def raw_stream(endpoint):
    """A plain (non-ZeroMQ) stream socket to a tcp:// or ipc:// endpoint, or None for other transports."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        return socket.create_connection((host.strip("[]"), int(port)), timeout=5)
    if endpoint.startswith("ipc://"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(endpoint[6:])
        return s
    return None


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    endpoint = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else ""
    limit = int(float(os.environ.get("MAX_REQUEST_MB", "64")) * MiB)
    t = Tester(endpoint, model)

    end = time.monotonic() + 30
    while not t.client.ready(model):
        if time.monotonic() > end:
            print(f"FAIL setup: {endpoint} model {model!r} not ready within 30 s")
            return 1
        time.sleep(0.2)
    try:
        st = t.client.status(model)
    except TesseraError as e:
        print(f"FAIL setup: STATUS: {e}")
        return 1
    d = t.input_dim = st["input_dim"]
    t.outputs = st["outputs"]
    m = {"model": model}
    row = b"\0" * (4 * d)
    t.healthy("setup")
    print(f"model {st['name']!r} input_dim {d} outputs {t.outputs} default version {st['default_version']}")

    garbage = b"\x3a\x7f not a header: field 7 claims 127 bytes \xff\xfe"
    try:
        pb.Header.FromString(garbage)
        print("FAIL setup: the garbage frame parses as a Header")
        return 1
    except Exception:
        pass

    bad = t.expect
    bad("wrong width", "INVALID_ARGUMENT", lambda r: [desc(header(**m), [1, d + 1]), row + b"\0" * 4])
    bad("two tensors", "INVALID_ARGUMENT", lambda r: [desc(desc(header(**m), [1, d]), [1, d]), row, row])
    bad("zero tensors", "INVALID_ARGUMENT", lambda r: [header(**m)])
    bad("descriptor without frame", "INVALID_ARGUMENT", lambda r: [desc(header(**m), [1, d])])
    bad("frame without descriptor", "INVALID_ARGUMENT", lambda r: [header(**m), row])
    bad("rank-3 shape", "INVALID_ARGUMENT", lambda r: [desc(header(**m), [1, d, 1]), row])
    bad("dtype 2", "INVALID_ARGUMENT", lambda r: [desc(header(**m), [1, d], dtype=2), row])
    bad("dtype unspecified", "INVALID_ARGUMENT", lambda r: [desc(header(**m), [1, d], dtype=0), row])
    bad("nbytes != frame", "INVALID_ARGUMENT", lambda r: [desc(header(**m), [1, d]), row[4:]])
    bad("nbytes != shape", "INVALID_ARGUMENT",
        lambda r: [desc(header(**m), [1, d], nbytes=4 * d + 4), row + b"\0" * 4])
    bad("unknown model", "NOT_FOUND", lambda r: [desc(header(model="no-such-model"), [1, d]), row])
    bad("unknown version", "NOT_FOUND", lambda r: [desc(header(model_version=987654321, **m), [1, d]), row])
    bad("garbage header", "INVALID_ARGUMENT", lambda r: [garbage, row])
    bad("protocol version 9", "VERSION_MISMATCH", lambda r: [desc(header(version=9, **m), [1, d]), row])
    rows = limit // (4 * d) + 1  # a well-formed tensor just over the limit
    bad(f"request over {limit / MiB:g} MiB", "RESOURCE_EXHAUSTED",
        lambda r: [desc(header(**m), [rows, d]), bytes(4 * d * rows)])
    bad("kind PUSH_PULL", "INVALID_ARGUMENT",
        lambda r: [desc(header(pb.KIND_PUSH_PULL, clock=1), [1, d]), row])
    bad("kind UNSPECIFIED", "INVALID_ARGUMENT", lambda r: [header(pb.KIND_UNSPECIFIED)])

    if 4 * limit <= 64 * MiB:
        def oversized():
            s = t.raw_socket()
            s.send(bytes(4 * limit + 4096))
            got = s.recv_multipart() if s.poll(1000) else None
            s.close()
            if got is None:
                return "no reply (connection dropped)"
            reply = pb.Header.FromString(got[0])
            if reply.kind == pb.KIND_ERROR and reply.error_code == pb.ERR_RESOURCE_EXHAUSTED:
                return "RESOURCE_EXHAUSTED"
            print(f"FAIL frame over 4x the limit: got kind {reply.kind} code {code_name(reply.error_code)}")
            t.failed += 1
            return "unexpected reply"
        t.survive(f"frame over {4 * limit / MiB:g} MiB", oversized)
    else:
        print(f"skip frame over 4x the limit ({4 * limit / MiB:g} MiB): set MAX_REQUEST_MB <= 16")

    def send_and_vanish():
        s = t.raw_socket()
        s.setsockopt(zmq.LINGER, 2000)  # let the frames go out before the close
        s.send_multipart([garbage, os.urandom(64)])
        s.send_multipart([desc(header(request_id=1, **m), [1, d]).SerializeToString(), row])
        s.close()
        time.sleep(0.2)
        return "DEALER sent garbage and a valid predict, then closed before the replies"
    t.survive("client gone before its reply", send_and_vanish)

    def raw_garbage():
        s = raw_stream(endpoint)
        if s is None:
            return "skipped (not tcp:// or ipc://)"
        with s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n" + os.urandom(512))
        s = raw_stream(endpoint)
        with s:
            s.sendall(b"\xff" + b"\0" * 8 + b"\x7f\x03")  # the start of a ZMTP greeting, then gone
        time.sleep(0.2)
        return "non-ZeroMQ bytes and a truncated greeting on plain sockets, then disconnected"
    t.survive("raw socket garbage", raw_garbage)

    t.healthy("the last case")
    t.client.close()
    if t.failed:
        print(f"FAIL: {t.failed} case(s) got the wrong answer")
        return 1
    print("all cases answered as specified; the server kept serving")
    return 0


if __name__ == "__main__":
    sys.exit(main())
