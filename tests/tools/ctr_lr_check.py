#!/usr/bin/python3
"""Learnability check for `tessera datagen ctr`: trains a plain logistic regression (one-hot ids of
every slot plus the log-transformed integers, AdaGrad on minibatches) on DIR/train.tsv and compares its
test AUC with the planted model's own (DIR/truth.json). Exit status 0 when they are within --tol.

usage: ctr_lr_check.py DIR [--epochs E] [--lr LR] [--batch B] [--l2 L] [--tol T]
Needs numpy (Debian's python3-numpy)."""
import argparse
import json
import math
import sys

import numpy as np


def load(path, n_dense, n_slots, vocab):
    """Criteo TSV -> dense [n, D] (log1p of max(x, 0)), ids [n, S] (per-slot index; -1 = missing),
    labels [n]. `vocab` maps each slot's hex strings to dense indices and grows on training data."""
    labels, dense, ids = [], [], []
    grow = all(len(v) == 0 for v in vocab)
    with open(path) as f:
        for line in f:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 1 + n_dense + n_slots:
                raise SystemExit(f"{path}: {len(fields)} fields, want {1 + n_dense + n_slots}")
            labels.append(int(fields[0]))
            dense.append([math.log1p(max(int(x), 0)) if x else 0.0 for x in fields[1:1 + n_dense]])
            row = []
            for s, h in enumerate(fields[1 + n_dense:]):
                if not h:
                    row.append(-1)
                elif h in vocab[s]:
                    row.append(vocab[s][h])
                elif grow:
                    vocab[s][h] = len(vocab[s])
                    row.append(vocab[s][h])
                else:
                    row.append(-1)  # an id the training data never had
            ids.append(row)
    return (np.asarray(dense, dtype=np.float64).reshape(-1, n_dense),
            np.asarray(ids, dtype=np.int64).reshape(-1, n_slots), np.asarray(labels, dtype=np.float64))


def auc(score, label):
    """Mann-Whitney AUC with average ranks for ties."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = 0.5 * (i + j) + 1
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    pos = label > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def logloss(z, y):
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


class Model:
    def __init__(self, n_dense, sizes):
        self.sizes = sizes
        self.offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.w = np.zeros(self.offs[-1] + 1)  # the last row: missing / unseen ids, always 0
        self.a = np.zeros(n_dense)
        self.b = 0.0
        self.gw = np.full_like(self.w, 1e-8)
        self.ga = np.full_like(self.a, 1e-8)
        self.gb = 1e-8

    def rows(self, ids):
        r = ids + self.offs[:-1]
        r[ids < 0] = self.offs[-1]
        return r

    def logit(self, dense, rows):
        return self.b + dense @ self.a + self.w[rows].sum(axis=1)

    def step(self, dense, rows, y, lr, l2):
        g = (1.0 / (1.0 + np.exp(-self.logit(dense, rows))) - y) / len(y)
        flat = rows.ravel()
        gw = np.bincount(flat, weights=np.repeat(g, rows.shape[1]), minlength=len(self.w))
        touched = np.unique(flat)
        gw[touched] += l2 * self.w[touched]
        ga = dense.T @ g
        gb = g.sum()
        self.gw[touched] += gw[touched] ** 2
        self.w[touched] -= lr * gw[touched] / np.sqrt(self.gw[touched])
        self.w[-1] = 0.0
        self.ga += ga ** 2
        self.a -= lr * ga / np.sqrt(self.ga)
        self.gb += gb ** 2
        self.b -= lr * gb / math.sqrt(self.gb)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--l2", type=float, default=0.0)
    ap.add_argument("--tol", type=float, default=0.005)
    ap.add_argument("--seed", type=int, default=0)
    o = ap.parse_args()
    truth = json.load(open(f"{o.dir}/truth.json"))
    D, S = int(truth["dense"]), int(truth["slots"])
    vocab = [dict() for _ in range(S)]
    xd, xi, y = load(f"{o.dir}/train.tsv", D, S, vocab)
    td, ti, ty = load(f"{o.dir}/test.tsv", D, S, vocab)
    # Standardised integers and a bias at the base rate: AdaGrad then converges in a few epochs.
    mean, sd = xd.mean(axis=0), xd.std(axis=0) + 1e-12
    xd, td = (xd - mean) / sd, (td - mean) / sd
    m = Model(D, [len(v) for v in vocab])
    m.b = math.log(y.mean() / (1 - y.mean()))
    rows, trows = m.rows(xi), m.rows(ti)
    rng = np.random.default_rng(o.seed)
    for epoch in range(o.epochs):
        perm = rng.permutation(len(y))
        for k in range(0, len(y), o.batch):
            idx = perm[k:k + o.batch]
            m.step(xd[idx], rows[idx], y[idx], o.lr, o.l2)
        z = m.logit(td, trows)
        print(f"epoch {epoch + 1}: test_auc={auc(z, ty):.4f} test_logloss={logloss(z, ty):.4f}", flush=True)
    z = m.logit(td, trows)
    got = auc(z, ty)
    gap = got - truth["test_auc"]
    print(f"trained test_auc={got:.4f} logloss={logloss(z, ty):.4f}; planted test_auc={truth['test_auc']:.4f} "
          f"logloss={truth['test_logloss']:.4f}; gap={gap:+.4f} (tolerance {o.tol})")
    return 0 if abs(gap) <= o.tol else 1


if __name__ == "__main__":
    sys.exit(main())
