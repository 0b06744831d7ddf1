"""The ground-truth benchmark: Fashion-MNIST-LT with a planted rare mode in every class.

The rare mode is the garment *lying on its side* (rotated by 90 degrees, counter-clockwise).
A small CNN really fails on it: the shipped predictor is 0.842 accurate on the upright test
split and 0.054 on the same images rotated (worse than chance). Its convolutions are
translation- but not rotation-equivariant, its head flattens features tied to positions, and
nothing it trained on (flips, shifts of 2 px) shows a garment on its side. A rotation by 90
degrees is exact on the pixel grid, so every image's mode is known and invertible.

Derived deterministically (seed 0) from the shipped Fashion-MNIST-LT arrays, no other data:

  world       what the generative model learns from, the analogue of a foundation model's
              data: WORLD_PER_CLASS images per class (the class's train + validation images,
              reused when the class has fewer), exactly WORLD_RARE_SHARE of each class rotated.
  train       the predictor's long-tailed training set (Fashion-MNIST-LT's 12,406 images) with
              exactly TRAIN_RARE_SHARE of them rotated (62: the rare mode is nearly absent).
  validation  Fashion-MNIST-LT's balanced validation split, upright.
  test        the official test split, upright: the common-mode group. The rare-mode group is
              the same split rotated (the `rotate90` shift of `ltg_jax.data.shifts`).

and, for the mode oracle, `mode_arrays`: every train + validation image (and every test image)
once upright and once rotated, labelled by mode.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MODES = ("upright", "rotated")
COMMON, RARE = 0, 1
WORLD_PER_CLASS = 1200
WORLD_RARE_SHARE = 0.10
TRAIN_RARE_SHARE = 0.005
SEED = 0
SPLITS = ("train", "validation", "test", "world")
RARE_SHIFT = "rotate90"  # the shift of `ltg_jax.data.shifts` that shows the test split's rare mode


def rotate(images: np.ndarray) -> np.ndarray:
    """[N, H, W, ...] -> the same images lying on their side (90 degrees counter-clockwise)."""
    return np.ascontiguousarray(np.rot90(images, k=1, axes=(1, 2)))


def set_upright(images: np.ndarray) -> np.ndarray:
    """The inverse of `rotate`."""
    return np.ascontiguousarray(np.rot90(images, k=-1, axes=(1, 2)))


def exact_share_mask(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """bool [n] with exactly round(share * n) True entries at random positions."""
    mask = np.zeros(n, bool)
    mask[rng.permutation(n)[: int(round(share * n))]] = True
    return mask


def plant(images: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """Images with those whose mode is RARE rotated (the others untouched)."""
    out = images.copy()
    out[modes == RARE] = rotate(images[modes == RARE])
    return out


def world_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """[K * per_class] indices into `labels`: per class a seeded permutation of its members,
    repeated as often as needed (every member used before any twice), then sorted by class."""
    picks = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        order = np.concatenate(
            [rng.permutation(members) for _ in range(-(-per_class // members.size))]
        )
        picks.append(order[:per_class])
    return np.concatenate(picks)


def build_world_arrays(
    shipped: Mapping[str, np.ndarray],
    seed: int = SEED,
    per_class: int = WORLD_PER_CLASS,
    world_rare_share: float = WORLD_RARE_SHARE,
    train_rare_share: float = TRAIN_RARE_SHARE,
) -> dict[str, np.ndarray]:
    """{split}_images / _labels / _modes / _index of the four SPLITS, from Fashion-MNIST-LT.

    `shipped` is `fashion_mnist.load_shipped()` (uint8 images [N, 28, 28]). `_index` is the
    position in the split; the world split's `_source` gives the pooled train + validation
    image each of its images was made from.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    train_modes = exact_share_mask(shipped["train_labels"].size, train_rare_share, rng)
    for split in ("train", "validation", "test"):
        images, labels = shipped[f"{split}_images"], shipped[f"{split}_labels"]
        modes = (
            train_modes.astype(np.int32) if split == "train" else np.zeros(labels.size, np.int32)
        )
        out[f"{split}_images"] = plant(images, modes)
        out[f"{split}_labels"] = labels
        out[f"{split}_modes"] = modes
        out[f"{split}_index"] = np.arange(labels.size, dtype=np.int32)
    pool_images = np.concatenate([shipped["train_images"], shipped["validation_images"]])
    pool_labels = np.concatenate([shipped["train_labels"], shipped["validation_labels"]])
    source = world_indices(pool_labels, per_class, rng)
    world_labels = pool_labels[source]
    world_modes = np.concatenate(
        [exact_share_mask(per_class, world_rare_share, rng) for _ in np.unique(world_labels)]
    ).astype(np.int32)
    out["world_images"] = plant(pool_images[source], world_modes)
    out["world_labels"] = world_labels
    out["world_modes"] = world_modes
    out["world_index"] = np.arange(source.size, dtype=np.int32)
    out["world_source"] = source.astype(np.int32)
    return out


def mode_arrays(shipped: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The mode oracle's data: train = every train + validation image upright and rotated,
    test = every test image upright and rotated; labels are modes (0 upright, 1 rotated)."""
    out: dict[str, np.ndarray] = {}
    pools = {
        "train": np.concatenate([shipped["train_images"], shipped["validation_images"]]),
        "test": shipped["test_images"],
    }
    for split, images in pools.items():
        n = images.shape[0]
        out[f"{split}_images"] = np.concatenate([images, rotate(images)])
        out[f"{split}_labels"] = np.repeat(np.asarray([COMMON, RARE], np.int32), n)
        out[f"{split}_index"] = np.arange(2 * n, dtype=np.int32)
    return out
