"""Input adapters between the VAE decoder and a predictor: differentiable, jit-friendly.

Decoded images are [B,H,W,C] in [-1, 1] at the diffusion model's resolution; a predictor
wants its own size, channels, range and normalisation. `adapt` maps one to the other with
pure jnp ops (antialiased resize, centre crop, grey <-> RGB, [-1,1] -> [0,1], mean/std), so
guidance gradients flow through it. Configured by an `InputAdapter` (a config block, a
bundle's metadata, or keyword arguments of `LTGPipeline`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

RANGES = ("[-1,1]", "[0,1]")
NORMALISE_PRESETS = {
    "none": None,
    # torchvision / timm ImageNet statistics, for inputs in [0, 1].
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclasses.dataclass(frozen=True)
class InputAdapter:
    """What the predictor takes. Empty size/channels: leave as decoded."""

    size: tuple[int, ...] = ()  # (height, width) after resize/crop; () = unchanged
    crop: bool = False  # True: resize the short side to fit, then centre crop (keeps aspect)
    channels: int = 0  # 1 (grey) or 3 (RGB); 0 = unchanged
    range: str = "[-1,1]"  # the value range the predictor expects
    normalise: str = "none"  # none | imagenet: (x - mean) / std after the range mapping
    mean: tuple[float, ...] = ()  # custom statistics (override `normalise`)
    std: tuple[float, ...] = ()

    def __post_init__(self):
        """Reject bad settings where they enter."""
        if self.range not in RANGES:
            raise ValueError(f"input range {self.range!r}; use one of {RANGES}")
        if self.normalise not in NORMALISE_PRESETS:
            raise ValueError(
                f"input normalise {self.normalise!r}; use one of {sorted(NORMALISE_PRESETS)} "
                "or set mean and std"
            )
        if self.channels not in (0, 1, 3):
            raise ValueError(f"input channels {self.channels}; use 1 (grey), 3 (RGB) or 0")
        if len(self.size) not in (0, 2) or any(int(s) <= 0 for s in self.size):
            raise ValueError(f"input size {self.size}; use (height, width) or () to keep it")
        if len(self.mean) != len(self.std):
            raise ValueError("input mean and std need the same length (one value per channel)")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> InputAdapter:
        """From a dict/ConfigDict; `size` may be one int (square); unknown keys are errors."""
        cfg = dict(config.items()) if config is not None else {}
        unknown = sorted(set(cfg) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown predictor input keys {unknown}")
        size = cfg.get("size", ())
        size = (int(size),) * 2 if isinstance(size, int) else tuple(int(s) for s in size or ())
        cfg["size"] = size * 2 if len(size) == 1 else size
        for key in ("mean", "std"):
            cfg[key] = tuple(float(v) for v in cfg.get(key, ()) or ())
        return cls(**cfg)

    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) per channel, or None when no normalisation is asked for."""
        if self.mean:
            return self.mean, self.std
        return NORMALISE_PRESETS[self.normalise]


def _to_channels(images: jax.Array, channels: int) -> jax.Array:
    """Grey <-> RGB (ITU-R 601 luma for RGB -> grey, as PIL's convert('L'))."""
    c = images.shape[-1]
    if channels in (0, c):
        return images
    if channels == 1 and c == 3:
        luma = jnp.asarray([0.299, 0.587, 0.114], images.dtype)
        return jnp.sum(images * luma, axis=-1, keepdims=True)
    if channels == 3 and c == 1:
        return jnp.repeat(images, 3, axis=-1)
    if channels == 1:
        return jnp.mean(images, axis=-1, keepdims=True)
    raise ValueError(f"cannot map {c}-channel images to {channels} channels")


def _resize(images: jax.Array, size: Sequence[int], crop: bool) -> jax.Array:
    """Antialiased bilinear resize to `size`; with `crop`, keep the aspect and centre crop."""
    b, h, w, c = images.shape
    th, tw = (int(s) for s in size)
    if (th, tw) == (h, w):
        return images  # already the size: no op at all, so numerics stay bit for bit
    if crop:
        scale = max(th / h, tw / w)
        rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
    else:
        rh, rw = th, tw
    if (rh, rw) != (h, w):
        # antialias: 512 px -> 32 px without it would alias away the content.
        images = jax.image.resize(images, (b, rh, rw, c), "linear", antialias=True)
    top, left = (rh - th) // 2, (rw - tw) // 2
    return images[:, top : top + th, left : left + tw]


def adapt(images: jax.Array, adapter: InputAdapter) -> jax.Array:
    """Decoded images [B,H,W,C] in [-1,1] -> what the predictor takes [B,h,w,c]."""
    x = _to_channels(images, adapter.channels)
    if adapter.size:
        x = _resize(x, adapter.size, adapter.crop)
    if adapter.range == "[0,1]" or adapter.statistics() is not None:
        x = (x + 1.0) / 2.0
    stats = adapter.statistics()
    if stats is not None:
        mean, std = (jnp.asarray(v, x.dtype) for v in stats)
        x = (x - mean) / std
    return x
