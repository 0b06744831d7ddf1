"""Derives the shipped Fashion-MNIST-LT from the four original Fashion-MNIST idx files.

    python tools/derive_fashion_mnist_lt.py --source_dir /usr/share/datasets/fashion-mnist

Class i keeps floor(5000 * 100^(-i/9)) training images (seed 0), a balanced validation split
takes 100 further images per class, and the test split is the official 10,000 images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ltg_jax.data import fashion_mnist
from ltg_jax.io import atomic_save_npz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source_dir", default=None, help="folder of the four idx files")
    parser.add_argument("--out", default=str(fashion_mnist.SHIPPED_NPZ))
    args = parser.parse_args()
    arrays = fashion_mnist.build_long_tail_arrays(fashion_mnist.load_originals(args.source_dir))
    atomic_save_npz(args.out, compress=True, **arrays)
    sizes = {s: arrays[f"{s}_labels"].size for s in ("train", "validation", "test")}
    counts = np.bincount(arrays["train_labels"], minlength=fashion_mnist.NUM_CLASSES)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB): {sizes}")
    print(f"train counts per class: {counts.tolist()}")


if __name__ == "__main__":
    main()
