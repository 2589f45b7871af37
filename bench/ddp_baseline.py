#!/usr/bin/env python3
"""PyTorch DistributedDataParallel peer for Tessera's examples/fashion_mlp.ini job.

Two CPU processes, gloo backend over loopback, same model / optimizer / data /
partition / normalization / batch size as Tessera's default job:

  * Fashion-MNIST read from the same gz IDX files with gzip + numpy,
    pixels -> ((p / 255) - 0.2860) / 0.3530
  * MLP 784-256-128-10 with ReLU, softmax cross-entropy
  * Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8
  * batch 64 per process, rank r trains on examples [r*30000, (r+1)*30000),
    reshuffled every epoch, last partial batch dropped (468 steps/epoch/rank)

--hidden, --lr and --max-steps give other MLPs and run lengths: bench/wide_mlp.ini
is --hidden 4096,4096 --lr 1e-4 (bench/train_throughput.sh --model wide).

Throughput is measured the way Tessera reports train_examples_per_sec: training
examples over all processes divided by the wall time of the training step loops
only (data loading, process start-up and evaluation excluded; a barrier precedes
each epoch's clock start and the slowest rank's time counts).  Test accuracy is
computed at the end on rank 0 over the 10,000 test images.

Threads: torch.set_num_threads(T) per process (OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS are set to T as well).  When 2 x T exceeds the core count,
OMP_WAIT_POLICY=PASSIVE is set unless --omp-wait-policy says otherwise: with
libgomp's default spin-waiting, 2 processes x 2 threads on 2 cores run >10x
slower, which would be an unfair peer configuration.

Usage: /usr/bin/python3 bench/ddp_baseline.py [--epochs N] [--threads T] [--json]
"""
import argparse
import gzip
import json
import os
import socket
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
WORLD = 2
BATCH = 64
SEED = 1234


def read_idx_gz(path):
    """Read a gzip-compressed IDX file (ubyte data) into a numpy array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    if (magic >> 8) != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path}: unsupported IDX type 0x{magic:08x}")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def load_split(data_dir, images, labels):
    x = read_idx_gz(os.path.join(data_dir, images)).reshape(-1, 784).astype(np.float32)
    x = ((x / 255.0) - MEAN) / STD
    y = read_idx_gz(os.path.join(data_dir, labels)).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def make_model(hidden=(256, 128)):
    layers, prev = [], 784
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    return nn.Sequential(*layers, nn.Linear(prev, 10))


def worker(rank, args, port):
    torch.set_num_threads(args.threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)

    # --- data (not timed) -------------------------------------------------
    x_train, y_train = load_split(args.data_dir, "train-images-idx3-ubyte.gz",
                                  "train-labels-idx1-ubyte.gz")
    per_rank = x_train.shape[0] // WORLD
    lo, hi = rank * per_rank, (rank + 1) * per_rank
    x_part = x_train[lo:hi].contiguous()
    y_part = y_train[lo:hi].contiguous()
    del x_train, y_train
    steps_per_epoch = per_rank // BATCH  # drop last partial batch (468)

    # --- model / optimizer ------------------------------------------------
    torch.manual_seed(SEED)
    model = DDP(make_model(args.hidden))  # DDP broadcasts rank 0's initial parameters
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED + rank)

    # --- training (timed: the step loops only) ----------------------------
    train_s = 0.0
    steps_done = 0
    model.train()
    for _epoch in range(args.epochs):
        dist.barrier()
        t0 = time.perf_counter()
        perm = torch.randperm(per_rank, generator=gen)
        for s in range(steps_per_epoch):
            if args.max_steps and steps_done == args.max_steps:
                break
            steps_done += 1
            idx = perm[s * BATCH:(s + 1) * BATCH]
            xb, yb = x_part[idx], y_part[idx]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        train_s += time.perf_counter() - t0

    # slowest rank's training time counts
    t = torch.tensor([train_s], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    train_s = t.item()
    examples = WORLD * steps_done * BATCH

    # --- evaluation (not timed), rank 0 only ------------------------------
    if rank == 0:
        x_test, y_test = load_split(args.data_dir, "t10k-images-idx3-ubyte.gz",
                                    "t10k-labels-idx1-ubyte.gz")
        net = model.module
        net.eval()
        with torch.no_grad():
            pred = net(x_test).argmax(dim=1)
        acc = (pred == y_test).float().mean().item()
        res = {
            "examples_per_sec": examples / train_s,
            "test_accuracy": round(acc, 4),
            "epochs": args.epochs,
            "hidden": list(args.hidden),
            "steps": steps_done,
            "threads": args.threads,
            "train_examples": examples,
            "train_seconds": train_s,
            "world_size": WORLD,
            "batch_size": BATCH,
            "omp_wait_policy": args.omp_wait_policy_used,
            "torch_version": torch.__version__,
        }
        if args.json:
            print(json.dumps(res), flush=True)
        else:
            print(f"ddp_baseline: world={WORLD} threads/proc={args.threads} epochs={args.epochs} "
                  f"omp_wait_policy={args.omp_wait_policy_used} "
                  f"examples={examples} train_s={train_s:.3f} "
                  f"examples_per_sec={res['examples_per_sec']:.0f} "
                  f"test_accuracy={acc:.4f}", flush=True)

    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads per process (default 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--hidden", default="256,128",
                    help="hidden layer widths, comma-separated (default 256,128: the default job; "
                         "4096,4096 is bench/wide_mlp.ini)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    ap.add_argument("--max-steps", type=int, default=0,
                    help="stop after this many steps per process (0 = every epoch's steps)")
    ap.add_argument("--omp-wait-policy", default="auto", choices=["auto", "active", "passive"],
                    help="OMP_WAIT_POLICY for the workers; auto = passive when "
                         "processes x threads exceed the cores (libgomp's default "
                         "spin-waiting collapses under oversubscription), else "
                         "libgomp's default (default: auto)")
    args = ap.parse_args()
    if args.epochs < 1 or args.threads < 1:
        ap.error("--epochs and --threads must be >= 1")
    try:
        args.hidden = tuple(int(v) for v in args.hidden.split(","))
        assert all(v > 0 for v in args.hidden)
    except (ValueError, AssertionError):
        ap.error(f"--hidden {args.hidden!r}: expected positive widths, comma-separated")
    if args.max_steps < 0:
        ap.error("--max-steps must be >= 0")
    # Also cap the OpenMP / OpenBLAS pools of the spawned processes (they inherit
    # this environment and initialise their runtimes after the spawn).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    policy = args.omp_wait_policy
    if policy == "auto":
        policy = "passive" if WORLD * args.threads > (os.cpu_count() or 1) else None
    if policy:
        os.environ["OMP_WAIT_POLICY"] = policy.upper()
    args.omp_wait_policy_used = os.environ.get("OMP_WAIT_POLICY", "default")
    mp.spawn(worker, args=(args, free_port()), nprocs=WORLD, join=True)


if __name__ == "__main__":
    sys.exit(main())
