"""Splits a generated world set by the mode oracle, for the diagnosis in docs/world.md.

python tools/world_mode_manifest.py runs/world/synthetic/ltg/data docs/world/supply/ltg_gen0

Writes, in the output folder:
  rotated.json   manifest (accepted files) of the samples the class-oracle filter keeps and the
                 mode oracle calls rotated (Bag included: the mode oracle cannot tell its mode)
  upright.json   the kept samples it calls upright
  rotated_vs_true.png
                 per class, up to 8 kept rotated samples (left) beside 8 true rotated world
                 images (right), the pairs the mode supply compares
  counts.json    kept / rotated per class

The mode oracle is the benchmark's ground truth, not something a user has: the manifests serve
to measure what a generated set's rotated samples are worth (`--config.review.manifest.ltg`),
not as a filter to adopt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ltg_jax import assets, cli, io, ltg_sampling, mining, mode_supply
from ltg_jax.data import datasets, fashion_mnist, pipeline, synthetic, world

PER_SIDE = 8
ROOT = Path(__file__).resolve().parents[1]


def main(data_dir: str, out_dir: str) -> None:
    config = cli.load_config_file(ROOT / "configs" / "mine.py", "world")
    data = datasets.describe(config.data)
    oracle = ltg_sampling.load_bundle(config.oracle, "oracle")
    mode_oracle = ltg_sampling.load_bundle(str(assets.WORLD_MODE_ORACLE), "mode oracle")
    loaded = synthetic.load_synthetic(data_dir)
    images = mining.to_image_shape(loaded.images, data.image_shape)
    probs = mining.oracle_probs(oracle, images, int(config.eval.batch_size))
    keep = mining.oracle_keep(loaded.labels, probs, *mining.check_filter(config))
    modes = mining.oracle_probs(mode_oracle, images, int(config.eval.batch_size)).argmax(-1)
    rotated = keep & (modes == mode_oracle.class_names.index("rotated"))
    files = np.asarray([r["file_name"] for r in loaded.rows])
    out = Path(out_dir)
    io.atomic_write_json(out / "rotated.json", files[rotated].tolist())
    io.atomic_write_json(out / "upright.json", files[keep & ~rotated].tolist())
    names = data.class_names
    counts = {n: {"kept": int((keep & (loaded.labels == k)).sum()),
                  "rotated": int((rotated & (loaded.labels == k)).sum())}
              for k, n in enumerate(names)}  # fmt: skip
    io.atomic_write_json(out / "counts.json", counts)
    true_images, true_labels = mode_supply.upright_world(
        world.build_world_arrays(fashion_mnist.load_shipped())
    )
    rng = np.random.default_rng(0)
    background = np.full(data.image_shape, -1.0, np.float32)
    tiles = []
    for k in range(len(names)):
        ours = list(images[rotated & (loaded.labels == k)][:PER_SIDE])
        ours += [background] * (PER_SIDE - len(ours))
        picks = rng.choice(np.flatnonzero(true_labels == k), PER_SIDE, replace=False)
        truth = [pipeline.to_model_image(x[..., None]) for x in world.rotate(true_images[picks])]
        tiles += ours + [background] + truth
    io.save_grid(out / "rotated_vs_true.png", np.stack(tiles), columns=2 * PER_SIDE + 1)
    print(io.dumps(counts, indent=1))
    print(f"kept {int(keep.sum())}, rotated {int(rotated.sum())} -> {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
