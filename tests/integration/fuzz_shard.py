#!/usr/bin/python3
"""Sends garbage to a live shard for a while: random bytes, empty and multi-frame junk, headers that
parse but describe the wrong frames, and (last) a frame above the shard's size limit. Counts the
replies; exits 1 if a message that can be answered gets no reply. Usage: fuzz_shard.py ENDPOINT COUNT"""
import os
import random
import sys

import zmq


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


V = 2  # PROTOCOL_VERSION_CURRENT (proto/tessera.proto)


def header(version, kind, tensors):
    """A hand-packed tessera.Header (proto3 wire format): version=1, kind=2, tensors=7."""
    msg = b"\x08" + varint(version) + b"\x10" + varint(kind)
    for rows, cols, nbytes in tensors:
        desc = b"\x18\x01" + b"\x22" + varint(len(varint(rows) + varint(cols))) + varint(rows) + varint(cols)
        desc += b"\x30" + varint(nbytes)
        msg += b"\x3a" + varint(len(desc)) + desc
    return msg


def main():
    endpoint, count = sys.argv[1], int(sys.argv[2])
    rng = random.Random(42)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    cases = [
        lambda: [os.urandom(rng.randint(1, 200))],
        lambda: [b""],
        lambda: [os.urandom(16), os.urandom(64), os.urandom(8)],
        lambda: [header(V, 5, [(2, 3, 24)])],                          # frame missing
        lambda: [header(V, 5, [(2, 3, 24)]), b"\0" * 20],              # truncated frame
        lambda: [header(V, 5, [(2, 3, 24)]), b"\0" * 24],              # wrong tensor for this shard
        lambda: [header(V, 5, [(1, 1, 4)] * 2), b"\0" * 4],            # fewer frames than described
        lambda: [header(7, 4, [])],                                    # wrong protocol version
        lambda: [header(V, 9, [])],                                    # a kind shards do not serve
        lambda: [header(V, 4, [(1, 1, 4)]), b"\0" * 4],                # pull with tensors
    ]
    sent = answered = 0
    for _ in range(count):
        frames = rng.choice(cases)()
        sock.send_multipart(frames)
        sent += 1
        if sock.poll(2000):
            sock.recv_multipart()
            answered += 1
        else:
            print(f"no reply to {frames!r:.120}", file=sys.stderr)
            return 1
    # Oversized: above the limit, so ZeroMQ drops the connection; no reply is expected.
    big = ctx.socket(zmq.DEALER)
    big.setsockopt(zmq.LINGER, 0)
    big.connect(endpoint)
    big.send(b"\0" * (3 << 20))
    dropped = not big.poll(500)
    print(f"fuzz: sent {sent} malformed messages, {answered} answered with errors; oversized dropped={dropped}")
    return 0 if dropped else 1


if __name__ == "__main__":
    sys.exit(main())
