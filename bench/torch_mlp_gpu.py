#!/usr/bin/env python3
"""PyTorch single-GPU peer for bench/gpu_train.sh: the same ReLU MLP, Adam and batch as a Tessera job
file's [layer] linear sizes, trained on one GPU from data already on the device (the most favourable
setting for PyTorch). Prints one JSON line: examples_per_sec over the timed steps (CUDA-synchronised,
after warm-up), and the device name.

Usage: python3 bench/torch_mlp_gpu.py --job bench/wide_mlp.ini [--batch B] [--steps N] [--tf32]
"""
import argparse
import configparser
import json
import time

import torch


def layer_sizes(job):
    cp = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    cp.read(job)
    sizes = [int(cp["model"]["input"])]
    for sec in cp.sections():
        if sec.startswith("layer ") and cp[sec].get("type") == "linear":
            sizes.append(int(cp[sec]["out"]))
    lr = float(cp["optimizer"].get("lr", "0.001")) if cp.has_section("optimizer") else 1e-3
    return sizes, lr, int(cp["job"].get("batch_size", "64"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", required=True)
    ap.add_argument("--batch", type=int, default=0, help="default: the job's batch_size")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 (Tessera's default is off)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("torch_mlp_gpu.py: no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    sizes, lr, batch = layer_sizes(a.job)
    batch = a.batch or batch
    dev = torch.device("cuda")
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(64, batch, sizes[0], device=dev)
    y = torch.randint(0, sizes[-1], (64, batch), device=dev)

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x[i % 64]), y[i % 64]).backward()
        opt.step()

    for i in range(20):
        step(i)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(a.steps):
        step(i)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(json.dumps({"peer": "pytorch", "device": torch.cuda.get_device_name(0), "layers": sizes,
                      "batch": batch, "steps": a.steps, "tf32": a.tf32,
                      "examples_per_sec": a.steps * batch / dt}))


if __name__ == "__main__":
    main()
