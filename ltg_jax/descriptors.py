"""Measurable cluster descriptors: what a group of images shares, in numbers, without a model.

Each image gets a few pixel statistics (brightness, contrast, object size and position,
edge density); a group's means are compared with reference images (e.g. unguided samples of
the same class) in units of the reference std, and only clear differences are put into words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

DESCRIPTORS = (
    "brightness",
    "contrast",
    "object_area",
    "centre_x",
    "centre_y",
    "extent_w",
    "extent_h",
    "edge_density",
)

# (word when the group's mean is above the reference, word when below, short name in numbers)
_WORDS = {
    "brightness": ("brighter", "darker", "brightness"),
    "contrast": ("higher contrast", "lower contrast", "contrast"),
    "object_area": ("larger object", "smaller object", "area"),
    "centre_x": ("object further right", "object further left", "centre x"),
    "centre_y": ("object lower in the frame", "object higher in the frame", "centre y"),
    "extent_w": ("wider object", "narrower object", "width"),
    "extent_h": ("taller object", "shorter object", "height"),
    "edge_density": ("more edge detail", "less edge detail", "mean gradient"),
}

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights for RGB -> intensity


def intensity(images: np.ndarray) -> np.ndarray:
    """[N, H, W] intensity in [0, 1] of images [N, H, W, C] in [-1, 1] (C = 1 or 3; RGB -> luma)."""
    x = np.asarray(images, np.float64)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"images must be [N, H, W, C] with C = 1 or 3, got shape {x.shape}; "
            "add a batch axis (x[None]) or a channel axis (x[..., None])"
        )
    x = np.clip((x + 1.0) / 2.0, 0.0, 1.0)
    return x[..., 0] if x.shape[-1] == 1 else x @ _LUMA


def border_median(gray: np.ndarray) -> np.ndarray:
    """[N] median of each image's 1-pixel border ring in gray [N, H, W]: the background level."""
    ring = np.concatenate(
        [gray[:, 0, :], gray[:, -1, :], gray[:, 1:-1, 0], gray[:, 1:-1, -1]], axis=1
    )
    return np.median(ring, axis=1)


def object_mask(gray: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """[N, H, W] bool: pixels whose intensity differs from the border median by > threshold."""
    return np.abs(gray - border_median(gray)[:, None, None]) > threshold


def _centre(mask_1d: np.ndarray) -> np.ndarray:
    """[N] mean pixel-centre coordinate in [0, 1] of weights [N, L]; 0.5 where all are zero."""
    length = mask_1d.shape[1]
    coords = (np.arange(length) + 0.5) / length
    count = mask_1d.sum(axis=1)
    total = (mask_1d * coords).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.5)


def _extent(occupied: np.ndarray) -> np.ndarray:
    """[N] span (last - first + 1) / L of the True entries of occupied [N, L]; 0 when none."""
    length = occupied.shape[1]
    first = np.argmax(occupied, axis=1)
    last = length - 1 - np.argmax(occupied[:, ::-1], axis=1)
    return np.where(occupied.any(axis=1), (last - first + 1) / length, 0.0)


def image_descriptors(images: np.ndarray, threshold: float = 0.1) -> dict[str, np.ndarray]:
    """Per-image descriptors {name: [N]} of images [N, H, W, C] in [-1, 1].

    Intensity is the pixel value mapped to [0, 1] (RGB: BT.601 luma). The object mask holds the
    pixels whose intensity differs from the background by more than `threshold`, the background
    being the median of the 1-pixel border ring, so dark-on-light and light-on-dark both work.

    - brightness: mean intensity, in [0, 1].
    - contrast: std of intensity over the image.
    - object_area: fraction of pixels in the object mask, in [0, 1].
    - centre_x, centre_y: centroid of the mask in [0, 1] image coordinates (x to the right,
      y downwards; 0.5 = centred); 0.5 when the mask is empty.
    - extent_w, extent_h: the mask's bounding box as a fraction of width / height; 0 when empty.
    - edge_density: mean gradient magnitude of intensity (forward differences), a sharpness and
      clutter measure; 0 for a flat image.
    """
    gray = intensity(images)
    if min(gray.shape[1:]) < 3:
        raise ValueError(f"images must be at least 3x3 pixels, got {gray.shape[1:]}")
    mask = object_mask(gray, threshold)
    gy = np.diff(gray, axis=1)[:, :, :-1]
    gx = np.diff(gray, axis=2)[:, :-1, :]
    return {
        "brightness": gray.mean(axis=(1, 2)),
        "contrast": gray.std(axis=(1, 2)),
        "object_area": mask.mean(axis=(1, 2)),
        "centre_x": _centre(mask.sum(axis=1)),
        "centre_y": _centre(mask.sum(axis=2)),
        "extent_w": _extent(mask.any(axis=1)),
        "extent_h": _extent(mask.any(axis=2)),
        "edge_density": np.sqrt(gx**2 + gy**2).mean(axis=(1, 2)),
    }


def descriptor_stats(descriptors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """{'n', 'mean': {name: float}, 'std': {name: float}} of per-image descriptors {name: [N]}."""
    n = len(next(iter(descriptors.values())))
    return {
        "n": int(n),
        "mean": {k: float(np.mean(v)) for k, v in descriptors.items()},
        "std": {k: float(np.std(v)) for k, v in descriptors.items()},
    }


def z_scores(
    stats: Mapping[str, Any], reference_stats: Mapping[str, Any], min_std: float = 1e-3
) -> dict[str, float]:
    """{name: (group mean - reference mean) / reference std}; the std is floored at min_std.

    This is an effect size in reference-population stds (how unusual the group's average is
    for a single reference image), not a significance test.
    """
    ref_mean, ref_std = reference_stats["mean"], reference_stats["std"]
    return {
        k: (m - ref_mean[k]) / max(ref_std[k], min_std)
        for k, m in stats["mean"].items()
        if k in ref_mean
    }


def describe_groups(
    images: np.ndarray, groups: np.ndarray, reference: np.ndarray | None = None
) -> dict[str, Any]:
    """Descriptor stats per group of images [N, H, W, C] labelled by groups [N] (e.g. clusters).

    Returns {'groups': {label: {'n', 'mean', 'std'[, 'z']}}, 'reference': stats or None}; 'z'
    (see z_scores) is there when reference images [M, H', W', C'] are given.
    """
    groups = np.asarray(groups)
    if groups.shape != (len(images),):
        raise ValueError(
            f"groups must be [N] with one label per image, got shape {groups.shape} "
            f"for {len(images)} images"
        )
    desc = image_descriptors(images)
    ref_stats = None if reference is None else descriptor_stats(image_descriptors(reference))
    out: dict[Any, dict[str, Any]] = {}
    for label in np.unique(groups):
        sel = groups == label
        stats = descriptor_stats({k: v[sel] for k, v in desc.items()})
        if ref_stats is not None:
            stats["z"] = z_scores(stats, ref_stats)
        out[label.item()] = stats
    return {"groups": out, "reference": ref_stats}


def describe_in_words(
    stats: Mapping[str, Any], reference_stats: Mapping[str, Any], threshold: float = 1.0
) -> str:
    """Plain-English list of the descriptors whose |z| >= threshold, largest |z| first."""
    if reference_stats is None:
        raise ValueError("describe_in_words needs reference stats; pass reference images")
    z = z_scores(stats, reference_stats)
    picked = sorted((k for k in z if abs(z[k]) >= threshold), key=lambda k: -abs(z[k]))
    if not picked:
        return f"no descriptor differs from the unguided references by {threshold:g} std or more"
    parts = []
    for k in picked:
        above, below, short = _WORDS.get(k, (f"higher {k}", f"lower {k}", k))
        mean, ref = stats["mean"][k], reference_stats["mean"][k]
        parts.append(
            f"{above if z[k] > 0 else below} ({short} {mean:.2f} vs {ref:.2f}, z={z[k]:+.1f})"
        )
    return "; ".join(parts)
