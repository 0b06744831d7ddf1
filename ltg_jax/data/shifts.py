"""Shifted test sets: simple, documented, deterministic corruptions of a split's images.

A second view of robustness next to the clean test split (as ImageNet-V2/-A/-C are for
ImageNet). Each shift maps float images [N, H, W, C] in [-1, 1] to the same shape and range;
-1 is the background (black). Labels are unchanged.

  rotate90      the garment lying on its side (90 degrees counter-clockwise; square images).
                On the ground-truth benchmark (`ltg_jax.data.world`) it is the rare mode.
  shrink        half size (2x2 mean), in the top-left quarter: small and off-centre.
  occlude       the right half blacked out.
  low_contrast  contrast halved around mid-grey (x / 2).
  noise         Gaussian pixel noise, std 0.2 (a fixed seed, so every arm sees the same).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

NOISE_STD = 0.2
NOISE_SEED = 0


def rotate90(images: np.ndarray) -> np.ndarray:
    """[N, H, H, C] -> lying on their side (90 degrees counter-clockwise)."""
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"shift rotate90 needs square images, got {images.shape[1:3]}")
    return np.ascontiguousarray(np.rot90(images, k=1, axes=(1, 2)))


def shrink(images: np.ndarray) -> np.ndarray:
    """Half size by 2x2 means, placed in the top-left quarter on background."""
    n, h, w, c = images.shape
    small = images[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).mean((2, 4))
    out = np.full_like(images, -1.0)
    out[:, : h // 2, : w // 2] = small
    return out


def occlude(images: np.ndarray) -> np.ndarray:
    """The right half set to background."""
    out = images.copy()
    out[:, :, images.shape[2] // 2 :] = -1.0
    return out


def low_contrast(images: np.ndarray) -> np.ndarray:
    """Contrast halved around mid-grey (0 in [-1, 1])."""
    return images * 0.5


def noise(images: np.ndarray) -> np.ndarray:
    """Gaussian noise of std NOISE_STD (seed NOISE_SEED), clipped to [-1, 1]."""
    rng = np.random.default_rng(NOISE_SEED)
    noisy = images + rng.normal(0.0, NOISE_STD, images.shape).astype(images.dtype)
    return np.clip(noisy, -1.0, 1.0)


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rotate90": rotate90,
    "shrink": shrink,
    "occlude": occlude,
    "low_contrast": low_contrast,
    "noise": noise,
}


def check_shifts(names: Sequence[str]) -> tuple[str, ...]:
    """The names, or a ValueError naming the unknown ones and the known ones."""
    names = tuple(str(n) for n in names)
    unknown = [n for n in names if n not in SHIFTS]
    if unknown:
        raise ValueError(f"unknown shift(s) {unknown}; use any of {sorted(SHIFTS)}")
    return names


def shifted_name(split: str, shift: str) -> str:
    """The key of a split under a shift in eval results: 'test+rotate90'."""
    return f"{split}+{shift}"


def shifted_splits(
    split: str, arrays: dict[str, np.ndarray], names: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """{'<split>+<shift>': arrays with the shifted images} for each shift name."""
    return {
        shifted_name(split, name): {**arrays, "image": SHIFTS[name](arrays["image"])}
        for name in check_shifts(names)
    }
