#!/usr/bin/python3
"""Classifies the first N Fashion-MNIST test images with a Tessera serving endpoint.

    example_predict.py ENDPOINT [N] [MODEL]      e.g. example_predict.py tcp://127.0.0.1:5555 20

Reads the gzip IDX test files from $TESSERA_DATA (default /usr/share/datasets/fashion-mnist), scales
the pixels with the model's input_mean/input_std from STATUS, prints each image's class and the
accuracy against the labels. Images go in requests of 256.
"""
import gzip
import os
import sys

import numpy as np

from tessera_client import Client, TesseraError

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def read_idx(path, magic, n):
    """The first n items of a gzip IDX file (magic 2049: labels [n]; 2051: images [n, rows*cols])."""
    with gzip.open(path, "rb") as f:
        head = np.frombuffer(f.read(4), ">u4")[0]
        if head != magic:
            raise ValueError(f"{path}: IDX magic {head}, want {magic}")
        dims = np.frombuffer(f.read(4 * (magic & 0xFF)), ">u4")
        item = int(np.prod(dims[1:]))
        n = min(n, int(dims[0]))
        data = np.frombuffer(f.read(n * item), np.uint8)
    return data.reshape(n, item) if item > 1 else data


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    endpoint = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    model = sys.argv[3] if len(sys.argv) > 3 else ""
    data = os.environ.get("TESSERA_DATA", "/usr/share/datasets/fashion-mnist")
    images = read_idx(os.path.join(data, "t10k-images-idx3-ubyte.gz"), 2051, n)
    labels = read_idx(os.path.join(data, "t10k-labels-idx1-ubyte.gz"), 2049, n)

    with Client(endpoint) as c:
        try:
            st = c.status(model)
            if st["input_dim"] != images.shape[1]:
                print(f"model {st['name']!r} takes {st['input_dim']} inputs, images have {images.shape[1]}",
                      file=sys.stderr)
                return 1
            mean, std = st["input_mean"], st["input_std"] or 1.0
            x = (images.astype(np.float32) / 255 - mean) / std
            # Requests of 256 rows (800 KB) stay far below the router's size limit.
            parts = [c.predict(x[i:i + 256], model) for i in range(0, len(x), 256)]
        except TesseraError as e:
            print(f"{endpoint}: {e}", file=sys.stderr)
            return 1

    def name(k):
        return CLASSES[k] if k < len(CLASSES) else f"class {k}"

    pred = np.concatenate([p.logits for p in parts]).argmax(axis=1)
    for i, (k, y) in enumerate(zip(pred, labels)):
        print(f"{i:5d}  {name(k):<12} {'ok' if k == y else 'WRONG, is ' + name(y)}")
    acc = float(np.mean(pred == labels))
    versions = sorted({p.version for p in parts})
    print(f"model {st['name']} version {', '.join(map(str, versions))}: accuracy {acc:.4f} "
          f"on {len(labels)} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
