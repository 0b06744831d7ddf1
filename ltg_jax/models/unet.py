"""UNet2DConditionModel (Stable Diffusion 1.x/2.x and SDXL) in Flax linen, NHWC.

The parameter tree mirrors diffusers' module names (`down_blocks_0/resnets_1/conv1/kernel` <->
`down_blocks.0.resnets.1.conv1.weight`). Note the diffusers quirk we keep on purpose: the config
field `attention_head_dim` is the number of *heads* per block (SD 1.5: 8 heads of 40 channels).
SDXL adds `addition_embed_type="text_time"`: the pooled text embedding and six micro-conditioning
numbers (original size, crop corner, target size) join the timestep embedding (`added_cond`).
"""

from __future__ import annotations

import math
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
    Transformer2DModel,
    Upsample2D,
    as_tuple,
    check_remat,
    conv,
    group_norm,
    maybe_remat,
    remat_policy,
)

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn",)
TIME_IDS = 6  # SDXL micro-conditioning: original (h, w), crop (top, left), target (h, w)
# Config entries we do not implement: supported only at the value diffusers uses by default.
_UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "class_embed_type": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "num_class_embeds": None,
    "time_embedding_type": "positional",
    "time_cond_proj_dim": None,
    "timestep_post_act": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "center_input_sample": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "downsample_padding": 1,
    "act_fn": "silu",
    "attention_type": "default",
    "cross_attention_norm": None,
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
    "reverse_transformer_layers_per_block": None,
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
}


def timestep_embedding(
    timesteps: jax.Array,
    dim: int,
    flip_sin_to_cos: bool,
    freq_shift: float,
    max_period: int = 10000,
) -> jax.Array:
    """Sinusoidal embedding exactly as diffusers' get_timestep_embedding. [B] -> [B, dim] f32."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    args = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """linear_1 -> SiLU -> linear_2."""

    dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.silu(nn.Dense(self.dim, dtype=self.dtype, name="linear_1")(x))
        return nn.Dense(self.dim, dtype=self.dtype, name="linear_2")(x)


class DownBlock2D(nn.Module):
    """CrossAttnDownBlock2D (cross_attention=True) or DownBlock2D; returns (h, skips)."""

    out_channels: int
    num_layers: int
    cross_attention: bool
    add_downsample: bool
    num_heads: int = 1
    depth: int = 1
    groups: int = 32
    eps: float = 1e-5
    use_linear_projection: bool = False
    dtype: Dtype = jnp.float32
    remat: str | None = None  # the jax.checkpoint_policies name when recomputed

    @nn.compact
    def __call__(
        self, h: jax.Array, temb: jax.Array, context: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        skips = []
        for j in range(self.num_layers):
            resnet = maybe_remat(ResnetBlock2D, self.remat)(
                self.out_channels, self.groups, self.eps, dtype=self.dtype, name=f"resnets_{j}"
            )
            h = resnet(h, temb)
            if self.cross_attention:
                h = _transformer(self, f"attentions_{j}")(h, context)
            skips.append(h)
        if self.add_downsample:
            h = Downsample2D(self.out_channels, dtype=self.dtype, name="downsamplers_0")(h)
            skips.append(h)
        return h, tuple(skips)


class UpBlock2D(nn.Module):
    """CrossAttnUpBlock2D (cross_attention=True) or UpBlock2D; consumes skips last-first."""

    out_channels: int
    num_layers: int
    cross_attention: bool
    add_upsample: bool
    num_heads: int = 1
    depth: int = 1
    groups: int = 32
    eps: float = 1e-5
    use_linear_projection: bool = False
    dtype: Dtype = jnp.float32
    remat: str | None = None  # the jax.checkpoint_policies name when recomputed

    @nn.compact
    def __call__(
        self, h: jax.Array, skips: tuple[jax.Array, ...], temb: jax.Array, context: jax.Array
    ) -> jax.Array:
        for j in range(self.num_layers):
            h = jnp.concatenate([h, skips[-1 - j].astype(h.dtype)], axis=-1)
            resnet = maybe_remat(ResnetBlock2D, self.remat)(
                self.out_channels, self.groups, self.eps, dtype=self.dtype, name=f"resnets_{j}"
            )
            h = resnet(h, temb)
            if self.cross_attention:
                h = _transformer(self, f"attentions_{j}")(h, context)
        if self.add_upsample:
            h = Upsample2D(self.out_channels, dtype=self.dtype, name="upsamplers_0")(h)
        return h


class MidBlock2DCrossAttn(nn.Module):
    """UNetMidBlock2DCrossAttn: resnet, (transformer, resnet)."""

    channels: int
    num_heads: int
    depth: int = 1
    groups: int = 32
    eps: float = 1e-5
    output_scale_factor: float = 1.0
    use_linear_projection: bool = False
    dtype: Dtype = jnp.float32
    remat: str | None = None  # the jax.checkpoint_policies name when recomputed

    @nn.compact
    def __call__(self, h: jax.Array, temb: jax.Array, context: jax.Array) -> jax.Array:
        resnet = lambda name: maybe_remat(ResnetBlock2D, self.remat)(
            self.channels, self.groups, self.eps, self.output_scale_factor, self.dtype, name=name
        )
        h = resnet("resnets_0")(h, temb)
        h = _transformer(self, "attentions_0", self.channels)(h, context)
        return resnet("resnets_1")(h, temb)


def _transformer(block: nn.Module, name: str, channels: int | None = None) -> Transformer2DModel:
    """A block's Transformer2DModel, under its remat (diffusers: head_dim = channels // heads)."""
    channels = channels or block.out_channels
    return maybe_remat(Transformer2DModel, block.remat)(
        num_heads=block.num_heads,
        head_dim=channels // block.num_heads,
        depth=block.depth,
        groups=block.groups,
        use_linear_projection=block.use_linear_projection,
        dtype=block.dtype,
        name=name,
    )


class UNet2DConditionModel(nn.Module):
    """eps-prediction UNet: (latents [B,h,w,C], timesteps [B], context [B,L,D]) -> [B,h,w,C].

    Build it with `unet_from_config`. `remat`: "none", "decoder" (recompute each resnet and
    transformer of the up blocks in the backward pass), "all" (of every block). A ':policy'
    suffix (`layers.check_remat`) picks what they keep, e.g. 'decoder:dots_saveable'. The output is
    float32 whatever the compute dtype, for the scheduler's f32 maths.
    """

    in_channels: int = 4
    out_channels: int = 4
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (8, 8, 8, 8)
    transformer_depth: tuple[int, ...] = (1, 1, 1, 1)
    cross_attention_dim: int = 768
    use_linear_projection: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    mid_block_scale_factor: float = 1.0
    # SDXL's text_time embedding (0 = none): sinusoid width of each time id, and the width of
    # [pooled text embedding, 6 sinusoids] (projection_class_embeddings_input_dim).
    addition_time_embed_dim: int = 0
    addition_embed_dim: int = 0
    dtype: Dtype = jnp.float32
    remat: str = "none"

    def dummy_inputs(self) -> tuple[Any, ...]:
        """Smallest valid inputs (for abstract init): spatial size 2^(levels-1)."""
        s = 2 ** (len(self.block_out_channels) - 1)
        inputs = (
            jnp.zeros((1, s, s, self.in_channels), jnp.float32),
            jnp.zeros((1,), jnp.float32),
            jnp.zeros((1, 1, self.cross_attention_dim), jnp.float32),
        )
        if not self.addition_time_embed_dim:
            return inputs
        pooled = self.addition_embed_dim - TIME_IDS * self.addition_time_embed_dim
        added = {"text_embeds": jnp.zeros((1, pooled)), "time_ids": jnp.zeros((1, TIME_IDS))}
        return (*inputs, added)

    @nn.compact
    def __call__(
        self,
        latents: jax.Array,
        timesteps: jax.Array,
        context: jax.Array,
        added_cond: Mapping[str, jax.Array] | None = None,
    ) -> jax.Array:
        check_remat(self.remat)
        levels = len(self.block_out_channels)
        b, hgt, wid, _ = latents.shape
        if hgt % 2 ** (levels - 1) or wid % 2 ** (levels - 1):
            raise ValueError(
                f"latent size {hgt}x{wid} must be divisible by {2 ** (levels - 1)} "
                f"({levels} UNet levels); crop or pad the latents"
            )
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (b,))
        temb = timestep_embedding(
            timesteps, self.block_out_channels[0], self.flip_sin_to_cos, self.freq_shift
        )
        temb = TimestepEmbedding(4 * self.block_out_channels[0], self.dtype, name="time_embedding")(
            temb.astype(self.dtype)
        )
        if self.addition_time_embed_dim:
            temb = temb + self._text_time_embedding(added_cond, b)
        context = context.astype(self.dtype)
        common = dict(
            groups=self.norm_num_groups,
            eps=self.norm_eps,
            use_linear_projection=self.use_linear_projection,
            dtype=self.dtype,
        )

        h = conv(self.block_out_channels[0], 3, self.dtype, "conv_in")(latents.astype(self.dtype))
        skips: list[jax.Array] = [h]
        for i, block_type in enumerate(self.down_block_types):
            block = DownBlock2D(
                out_channels=self.block_out_channels[i],
                num_layers=self.layers_per_block[i],
                cross_attention=block_type == "CrossAttnDownBlock2D",
                add_downsample=i < levels - 1,
                num_heads=self.num_heads[i],
                depth=self.transformer_depth[i],
                remat=remat_policy(self.remat, ("all",)),
                name=f"down_blocks_{i}",
                **common,
            )
            h, res = block(h, temb, context)
            skips.extend(res)

        h = MidBlock2DCrossAttn(
            channels=self.block_out_channels[-1],
            num_heads=self.num_heads[-1],
            depth=self.transformer_depth[-1],
            output_scale_factor=self.mid_block_scale_factor,
            remat=remat_policy(self.remat, ("all",)),
            name="mid_block",
            **common,
        )(h, temb, context)

        rev = lambda t: tuple(reversed(t))
        for i, block_type in enumerate(self.up_block_types):
            n = rev(self.layers_per_block)[i] + 1
            res, skips = tuple(skips[-n:]), skips[:-n]
            h = UpBlock2D(
                out_channels=rev(self.block_out_channels)[i],
                num_layers=n,
                cross_attention=block_type == "CrossAttnUpBlock2D",
                add_upsample=i < levels - 1,
                num_heads=rev(self.num_heads)[i],
                depth=rev(self.transformer_depth)[i],
                remat=remat_policy(self.remat, ("decoder", "all")),
                name=f"up_blocks_{i}",
                **common,
            )(h, res, temb, context)

        h = nn.silu(group_norm(self.norm_num_groups, self.norm_eps, self.dtype, "conv_norm_out")(h))
        return conv(self.out_channels, 3, self.dtype, "conv_out")(h).astype(jnp.float32)

    def _text_time_embedding(self, added_cond: Mapping[str, jax.Array] | None, b: int) -> jax.Array:
        """SDXL: add_embedding([pooled text, sinusoids of the 6 time ids]) -> [B, temb]."""
        if added_cond is None or not {"text_embeds", "time_ids"} <= set(added_cond):
            raise ValueError(
                "this UNet (addition_embed_type=text_time, SDXL) needs added_cond="
                "{'text_embeds': [B, pooled], 'time_ids': [B, 6]}"
            )
        time_ids = jnp.broadcast_to(jnp.asarray(added_cond["time_ids"]), (b, TIME_IDS))
        sinusoids = timestep_embedding(
            time_ids.reshape(-1), self.addition_time_embed_dim, self.flip_sin_to_cos,
            self.freq_shift,
        ).reshape(b, -1)  # fmt: skip
        text = jnp.asarray(added_cond["text_embeds"], jnp.float32)
        embeds = jnp.concatenate([text, sinusoids], axis=-1).astype(self.dtype)
        return TimestepEmbedding(4 * self.block_out_channels[0], self.dtype, name="add_embedding")(
            embeds
        )


def unet_from_config(
    config: Mapping[str, Any],
    *,
    dtype: Dtype = jnp.float32,
    remat: str = "none",
    source: str = "unet/config.json",
) -> UNet2DConditionModel:
    """Build the module from a diffusers UNet2DConditionModel config.json dict.

    Raises ValueError naming `source` for block types or options we do not implement.
    """
    check_remat(remat)
    fail = lambda msg: ValueError(f"{source}: {msg}")
    cfg = fill_defaults("unet", config)
    cls_name = cfg.get("_class_name", "UNet2DConditionModel")
    if cls_name != "UNet2DConditionModel":
        raise fail(f"_class_name {cls_name!r} is not supported; use UNet2DConditionModel")
    added = cfg["addition_embed_type"]
    if added not in (None, "text_time"):
        raise fail(f"addition_embed_type={added!r} is not supported (only None or 'text_time')")
    dims = (cfg["addition_time_embed_dim"], cfg["projection_class_embeddings_input_dim"])
    if added and not all(dims):
        raise fail(
            "addition_embed_type='text_time' needs addition_time_embed_dim and "
            "projection_class_embeddings_input_dim"
        )
    depths = cfg["transformer_layers_per_block"]
    if not isinstance(depths, int) and any(not isinstance(d, int) for d in depths):
        raise fail("transformer_layers_per_block per layer (nested lists) is not supported")
    down, up = tuple(cfg["down_block_types"]), tuple(cfg["up_block_types"])
    mid = cfg["mid_block_type"]
    for kind, types, supported in (
        ("down_block_types", down, DOWN_BLOCK_TYPES),
        ("up_block_types", up, UP_BLOCK_TYPES),
        ("mid_block_type", (mid,), MID_BLOCK_TYPES),
    ):
        bad = [t for t in types if t not in supported]
        if bad:
            raise fail(f"unsupported {kind} {bad}; supported: {list(supported)}")
    for key, default in _UNSUPPORTED_DEFAULTS.items():
        if cfg[key] != default:
            raise fail(f"{key}={cfg[key]!r} is not supported (only {default!r})")
    channels = tuple(cfg["block_out_channels"])
    n = len(channels)
    if not len(down) == len(up) == n:
        raise fail("down_block_types, up_block_types and block_out_channels differ in length")
    # diffusers: num_attention_heads defaults to attention_head_dim (a historical misnomer).
    heads = cfg["num_attention_heads"] or cfg["attention_head_dim"]
    cross_dim = cfg["cross_attention_dim"]
    if not isinstance(cross_dim, int):
        raise fail("a per-block cross_attention_dim list is not supported; use one int")
    return UNet2DConditionModel(
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"],
        down_block_types=down,
        up_block_types=up,
        block_out_channels=channels,
        layers_per_block=as_tuple(cfg["layers_per_block"], n),
        num_heads=as_tuple(heads, n),
        transformer_depth=as_tuple(cfg["transformer_layers_per_block"], n),
        cross_attention_dim=cross_dim,
        use_linear_projection=bool(cfg["use_linear_projection"]),
        norm_num_groups=cfg["norm_num_groups"],
        norm_eps=cfg["norm_eps"],
        flip_sin_to_cos=cfg["flip_sin_to_cos"],
        freq_shift=cfg["freq_shift"],
        mid_block_scale_factor=cfg["mid_block_scale_factor"],
        addition_time_embed_dim=int(cfg["addition_time_embed_dim"] or 0) if added else 0,
        addition_embed_dim=int(cfg["projection_class_embeddings_input_dim"] or 0) if added else 0,
        dtype=dtype,
        remat=remat,
    )


def unet_apply(
    unet: UNet2DConditionModel,
    params: Mapping[str, Any],
    latents: jax.Array,
    timesteps: jax.Array,
    context: jax.Array,
    added_cond: Mapping[str, jax.Array] | None = None,
) -> jax.Array:
    """Predict noise. latents [B,h,w,C], timesteps [B] (or scalar), context [B,L,D] -> eps f32.

    `added_cond` (SDXL only): {'text_embeds': [B, pooled], 'time_ids': [B, 6]}.
    """
    return unet.apply({"params": params}, latents, timesteps, context, added_cond)
