"""AutoencoderTiny (TAESD, diffusers' `AutoencoderTiny`) in Flax linen, NHWC.

A small conv-only autoencoder distilled from a Stable Diffusion VAE: Longtail Guidance can
take its gradient through this decoder instead of the full one (guidance.decoder = "tiny"),
while the final image is still decoded by the full VAE.

Conventions as diffusers': the decoder takes *diffusion* latents divided by the folder's
`scaling_factor` (1.0 for TAESD, trained on scaled SD latents), soft-clamps them with
3·tanh(z/3) and returns images in [-1, 1]; the encoder takes images in [-1, 1]. Parameter
names follow the torch module tree (`decoder.layers.<i>...`): an index counts the
parameter-free layers (activations, upsampling) too, so the mapping stays mechanical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltg_jax.models.layers import Dtype, conv

DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "encoder_block_out_channels": (64, 64, 64, 64),
    "decoder_block_out_channels": (64, 64, 64, 64),
    "act_fn": "relu",
    "upsample_fn": "nearest",
    "latent_channels": 4,
    "upsampling_scaling_factor": 2,
    "num_encoder_blocks": (1, 3, 3, 3),
    "num_decoder_blocks": (3, 3, 3, 1),
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "force_upcast": False,
    "scaling_factor": 1.0,
    "shift_factor": 0.0,
}
_ACTIVATIONS = {"relu": jax.nn.relu, "silu": jax.nn.silu, "swish": jax.nn.silu, "gelu": jax.nn.gelu}


class TinyBlock(nn.Module):
    """AutoencoderTinyBlock: act(conv3(act(conv2(act(conv1(x))))) + x) (in == out channels)."""

    channels: int
    act: str
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.act]
        h = act(conv(self.channels, 3, self.dtype, "conv_0")(x))
        h = act(conv(self.channels, 3, self.dtype, "conv_2")(h))
        return act(conv(self.channels, 3, self.dtype, "conv_4")(h) + x)


class TinyEncoder(nn.Module):
    """EncoderTiny: images [B,H,W,C] in [-1,1] -> latents [B,H/8,W/8,latent] (unscaled)."""

    channels: Sequence[int]
    blocks: Sequence[int]
    latent_channels: int
    act: str
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h, i = ((x + 1.0) / 2.0).astype(self.dtype), 0  # TAESD works on [0, 1]
        for level, (ch, n) in enumerate(zip(self.channels, self.blocks, strict=True)):
            if level == 0:
                h = conv(ch, 3, self.dtype, f"layers_{i}")(h)
            else:
                h = conv(ch, 3, self.dtype, f"layers_{i}", stride=2, use_bias=False)(h)
            i += 1
            for _ in range(n):
                h = TinyBlock(ch, self.act, self.dtype, name=f"layers_{i}")(h)
                i += 1
        return conv(self.latent_channels, 3, self.dtype, f"layers_{i}")(h)


class TinyDecoder(nn.Module):
    """DecoderTiny: latents [B,h,w,latent] -> images [B,8h,8w,C] in about [-1, 1]."""

    channels: Sequence[int]
    blocks: Sequence[int]
    out_channels: int
    act: str
    upsample: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.act]
        h = (jnp.tanh(z / 3.0) * 3.0).astype(self.dtype)  # the soft clamp TAESD trains with
        h, i = act(conv(self.channels[0], 3, self.dtype, "layers_0")(h)), 2
        last = len(self.channels) - 1
        for level, (ch, n) in enumerate(zip(self.channels, self.blocks, strict=True)):
            for _ in range(n):
                h = TinyBlock(ch, self.act, self.dtype, name=f"layers_{i}")(h)
                i += 1
            if level != last:
                h = jnp.repeat(jnp.repeat(h, self.upsample, axis=1), self.upsample, axis=2)
                i += 1  # nn.Upsample (nearest)
            out = self.out_channels if level == last else ch
            h = conv(out, 3, self.dtype, f"layers_{i}", use_bias=level == last)(h)
            i += 1
        return (h.astype(jnp.float32) * 2.0) - 1.0


class AutoencoderTiny(nn.Module):
    """diffusers' AutoencoderTiny; `decode` is what tiny-decoder guidance differentiates."""

    in_channels: int = 3
    out_channels: int = 3
    encoder_channels: Sequence[int] = (64, 64, 64, 64)
    decoder_channels: Sequence[int] = (64, 64, 64, 64)
    encoder_blocks: Sequence[int] = (1, 3, 3, 3)
    decoder_blocks: Sequence[int] = (3, 3, 3, 1)
    latent_channels: int = 4
    act: str = "relu"
    upsample: int = 2
    dtype: Dtype = jnp.float32

    def setup(self) -> None:
        self.encoder = TinyEncoder(
            self.encoder_channels, self.encoder_blocks, self.latent_channels, self.act, self.dtype
        )
        self.decoder = TinyDecoder(
            self.decoder_channels, self.decoder_blocks, self.out_channels, self.act,
            self.upsample, self.dtype,
        )  # fmt: skip

    def encode(self, images: jax.Array) -> jax.Array:
        """images [B,H,W,C] in [-1,1] -> latents [B,H/f,W/f,latent] (f = 2^(levels-1))."""
        return self.encoder(images).astype(jnp.float32)

    def decode(self, z: jax.Array) -> jax.Array:
        """Latents [B,h,w,latent] (diffusion latents / scaling_factor) -> images in [-1, 1]."""
        return self.decoder(z)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.decode(self.encode(images))

    def dummy_inputs(self) -> tuple[jax.Array]:
        """Smallest valid input for abstract init."""
        s = 2 ** (len(self.encoder_channels) - 1)
        return (jnp.zeros((1, s, s, self.in_channels), jnp.float32),)


def vae_tiny_from_config(
    config: Mapping[str, Any], *, dtype: Dtype = jnp.float32, source: str = "config.json"
) -> AutoencoderTiny:
    """Build the module from a diffusers AutoencoderTiny config.json dict (errors name source)."""
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
    cls_name = config.get("_class_name", "AutoencoderTiny")
    if cls_name != "AutoencoderTiny":
        raise ValueError(f"{source}: _class_name {cls_name!r} is not AutoencoderTiny")
    if cfg["act_fn"] not in _ACTIVATIONS or cfg["upsample_fn"] != "nearest":
        raise ValueError(
            f"{source}: act_fn={cfg['act_fn']!r}, upsample_fn={cfg['upsample_fn']!r} are not "
            f"supported (act_fn one of {sorted(_ACTIVATIONS)}, upsample_fn 'nearest')"
        )
    for side in ("encoder", "decoder"):
        if len(cfg[f"{side}_block_out_channels"]) != len(cfg[f"num_{side}_blocks"]):
            raise ValueError(
                f"{source}: {side}_block_out_channels and num_{side}_blocks differ in length"
            )
    return AutoencoderTiny(
        in_channels=int(cfg["in_channels"]),
        out_channels=int(cfg["out_channels"]),
        encoder_channels=tuple(cfg["encoder_block_out_channels"]),
        decoder_channels=tuple(cfg["decoder_block_out_channels"]),
        encoder_blocks=tuple(cfg["num_encoder_blocks"]),
        decoder_blocks=tuple(cfg["num_decoder_blocks"]),
        latent_channels=int(cfg["latent_channels"]),
        act=str(cfg["act_fn"]),
        upsample=int(cfg["upsampling_scaling_factor"]),
        dtype=dtype,
    )


def tiny_decode(
    vae: AutoencoderTiny, params: Mapping[str, Any], latents: jax.Array, scaling_factor: float
) -> jax.Array:
    """Diffusion latents [B,h,w,latent] -> images [B,H,W,C] through the tiny decoder."""
    return vae.apply({"params": params}, latents / scaling_factor, method=AutoencoderTiny.decode)
