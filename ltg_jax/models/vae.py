"""AutoencoderKL (the Stable Diffusion VAE) in Flax linen, NHWC.

Images are [B,H,W,C] in [-1, 1]; latents [B,H/f,W/f,latent_channels] with f = 2^(levels-1).
`vae_decode` takes *unscaled* latents (what the encoder's posterior produces); diffusion
latents are `scaling_factor * z`, so samplers call `decode_latents(vae, params, latents,
scaling_factor)` which divides explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltg_jax.models.defaults import fill_defaults
from ltg_jax.models.layers import (
    Downsample2D,
    Dtype,
    ResnetBlock2D,
    SpatialSelfAttention,
    Upsample2D,
    check_remat,
    conv,
    group_norm,
    maybe_remat,
    remat_policy,
)

ENCODER_BLOCK_TYPES = ("DownEncoderBlock2D",)
DECODER_BLOCK_TYPES = ("UpDecoderBlock2D",)
_UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "act_fn": "silu",
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}
_EPS = 1e-6  # diffusers' Encoder/Decoder hard-code resnet_eps=1e-6


class EncoderBlock(nn.Module):
    """DownEncoderBlock2D: resnets without time embedding, then an asymmetric-pad downsample."""

    out_channels: int
    num_layers: int
    add_downsample: bool
    groups: int = 32
    dtype: Dtype = jnp.float32
    remat: str | None = None  # the jax.checkpoint_policies name when recomputed

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        resnet_cls = maybe_remat(ResnetBlock2D, self.remat)
        for j in range(self.num_layers):
            h = resnet_cls(
                self.out_channels, self.groups, _EPS, dtype=self.dtype, name=f"resnets_{j}"
            )(h)
        if self.add_downsample:
            h = Downsample2D(self.out_channels, True, self.dtype, name="downsamplers_0")(h)
        return h


class DecoderBlock(nn.Module):
    """UpDecoderBlock2D: resnets then nearest x2 upsample."""

    out_channels: int
    num_layers: int
    add_upsample: bool
    groups: int = 32
    dtype: Dtype = jnp.float32
    remat: str | None = None  # the jax.checkpoint_policies name when recomputed

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        resnet_cls = maybe_remat(ResnetBlock2D, self.remat)
        for j in range(self.num_layers):
            h = resnet_cls(
                self.out_channels, self.groups, _EPS, dtype=self.dtype, name=f"resnets_{j}"
            )(h)
        if self.add_upsample:
            h = Upsample2D(self.out_channels, self.dtype, name="upsamplers_0")(h)
        return h


class MidBlock(nn.Module):
    """UNetMidBlock2D: resnet, single-head spatial self-attention, resnet."""

    channels: int
    groups: int = 32
    dtype: Dtype = jnp.float32
    remat: str | None = None  # the jax.checkpoint_policies name when recomputed

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        resnet = lambda name: maybe_remat(ResnetBlock2D, self.remat)(
            self.channels, self.groups, _EPS, dtype=self.dtype, name=name
        )
        attention = maybe_remat(SpatialSelfAttention, self.remat)
        h = resnet("resnets_0")(h)
        h = attention(self.channels, self.groups, _EPS, self.dtype, name="attentions_0")(h)
        return resnet("resnets_1")(h)


def _output_tail(coder: nn.Module, h: jax.Array, features: int) -> jax.Array:
    """conv_norm_out -> SiLU -> conv_out of an Encoder/Decoder, recomputed under its remat.

    In the decoder this tail runs at full resolution and holds the largest activations of
    a guided step's backward pass.
    """
    norm = group_norm(coder.groups, _EPS, coder.dtype, "conv_norm_out")
    out = conv(features, 3, coder.dtype, "conv_out")
    tail = lambda _, h: out(nn.silu(norm(h)))
    return maybe_remat(tail, coder.remat)(coder, h)


class Encoder(nn.Module):
    """images [B,H,W,C] -> moments [B,h,w,2*latent] (before quant_conv)."""

    latent_channels: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    groups: int
    dtype: Dtype = jnp.float32
    remat: str | None = None  # the jax.checkpoint_policies name when recomputed

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        chans = self.block_out_channels
        h = conv(chans[0], 3, self.dtype, "conv_in")(x.astype(self.dtype))
        for i, c in enumerate(chans):
            h = EncoderBlock(
                c, self.layers_per_block, i < len(chans) - 1, self.groups, self.dtype,
                self.remat, name=f"down_blocks_{i}",
            )(h)  # fmt: skip
        h = MidBlock(chans[-1], self.groups, self.dtype, self.remat, name="mid_block")(h)
        return _output_tail(self, h, 2 * self.latent_channels)


class Decoder(nn.Module):
    """latents [B,h,w,latent] (after post_quant_conv) -> images [B,H,W,C]."""

    out_channels: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    groups: int
    dtype: Dtype = jnp.float32
    remat: str | None = None  # the jax.checkpoint_policies name when recomputed

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        chans = tuple(reversed(self.block_out_channels))
        h = conv(chans[0], 3, self.dtype, "conv_in")(z.astype(self.dtype))
        h = MidBlock(chans[0], self.groups, self.dtype, self.remat, name="mid_block")(h)
        for i, c in enumerate(chans):
            h = DecoderBlock(
                c, self.layers_per_block + 1, i < len(chans) - 1, self.groups, self.dtype,
                self.remat, name=f"up_blocks_{i}",
            )(h)  # fmt: skip
        return _output_tail(self, h, self.out_channels)


class AutoencoderKL(nn.Module):
    """KL autoencoder. Methods: `encode` -> (mean, logvar), `decode` (unscaled latents).

    `remat`: "none", "decoder" (recompute each resnet, attention and the full-resolution output
    tail of the decoder in the backward pass: backprop through the decoder is the memory peak
    of guidance), "all" (the encoder's too). A ':policy' suffix
    (`layers.check_remat`) picks what the recomputed blocks keep. Outputs are float32.
    """

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 512
    dtype: Dtype = jnp.float32
    remat: str = "none"

    def setup(self) -> None:
        check_remat(self.remat)
        self.encoder = Encoder(
            self.latent_channels,
            self.block_out_channels,
            self.layers_per_block,
            self.norm_num_groups,
            self.dtype,
            remat=remat_policy(self.remat, ("all",)),
        )
        self.decoder = Decoder(
            self.out_channels,
            self.block_out_channels,
            self.layers_per_block,
            self.norm_num_groups,
            self.dtype,
            remat=remat_policy(self.remat, ("decoder", "all")),
        )
        # setup() names submodules after their attribute, so no explicit name here.
        self.quant_conv = conv(2 * self.latent_channels, 1, self.dtype, None)
        self.post_quant_conv = conv(self.latent_channels, 1, self.dtype, None)

    def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """images [B,H,W,C] in [-1,1] -> (mean, logvar) each [B,h,w,latent] f32."""
        moments = self.quant_conv(self.encoder(images)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)  # as DiagonalGaussianDistribution

    def decode(self, z: jax.Array) -> jax.Array:
        """Unscaled latents [B,h,w,latent] -> images [B,H,W,C] (about [-1,1]) f32."""
        return self.decoder(self.post_quant_conv(z.astype(self.dtype))).astype(jnp.float32)

    def __call__(self, images: jax.Array) -> jax.Array:
        """Reconstruct from the posterior mean (creates every parameter at init)."""
        return self.decode(self.encode(images)[0])

    def dummy_inputs(self) -> tuple[jax.Array]:
        """Smallest valid input for abstract init."""
        s = 2 ** (len(self.block_out_channels) - 1)
        return (jnp.zeros((1, s, s, self.in_channels), jnp.float32),)


def vae_from_config(
    config: Mapping[str, Any],
    *,
    dtype: Dtype = jnp.float32,
    remat: str = "none",
    source: str = "vae/config.json",
) -> AutoencoderKL:
    """Build the module from a diffusers AutoencoderKL config.json dict (errors name `source`)."""
    check_remat(remat)
    fail = lambda msg: ValueError(f"{source}: {msg}")
    cfg = fill_defaults("vae", config)
    cls_name = cfg.get("_class_name", "AutoencoderKL")
    if cls_name != "AutoencoderKL":
        raise fail(f"_class_name {cls_name!r} is not supported; use AutoencoderKL")
    channels = tuple(cfg["block_out_channels"])
    down, up = tuple(cfg["down_block_types"]), tuple(cfg["up_block_types"])
    for kind, types, supported in (
        ("down_block_types", down, ENCODER_BLOCK_TYPES),
        ("up_block_types", up, DECODER_BLOCK_TYPES),
    ):
        bad = [t for t in types if t not in supported]
        if bad:
            raise fail(f"unsupported {kind} {bad}; supported: {list(supported)}")
    if not len(down) == len(up) == len(channels):
        raise fail("down_block_types, up_block_types and block_out_channels differ in length")
    for key, default in _UNSUPPORTED_DEFAULTS.items():
        if cfg[key] != default:
            raise fail(f"{key}={cfg[key]!r} is not supported (only {default!r})")
    return AutoencoderKL(
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"],
        block_out_channels=channels,
        layers_per_block=cfg["layers_per_block"],
        latent_channels=cfg["latent_channels"],
        norm_num_groups=cfg["norm_num_groups"],
        sample_size=cfg["sample_size"],
        dtype=dtype,
        remat=remat,
    )


def vae_encode(
    vae: AutoencoderKL, params: Mapping[str, Any], images: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """images [B,H,W,C] in [-1,1] -> posterior (mean, logvar), each [B,h,w,latent], unscaled."""
    return vae.apply({"params": params}, images, method=AutoencoderKL.encode)


def vae_decode(vae: AutoencoderKL, params: Mapping[str, Any], z: jax.Array) -> jax.Array:
    """Unscaled latents z [B,h,w,latent] -> images [B,H,W,C] in about [-1,1]."""
    return vae.apply({"params": params}, z, method=AutoencoderKL.decode)


def decode_latents(
    vae: AutoencoderKL, params: Mapping[str, Any], latents: jax.Array, scaling_factor: float
) -> jax.Array:
    """Diffusion latents (= scaling_factor * z) [B,h,w,latent] -> images [B,H,W,C]."""
    return vae_decode(vae, params, latents / scaling_factor)


def sample_posterior(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Draw z = mean + exp(logvar/2) * noise; shapes [B,h,w,latent]."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
