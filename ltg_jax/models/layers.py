"""Building blocks shared by the UNet and the VAE, named as in diffusers so weights map 1:1.

Layout is NHWC throughout. Submodules that diffusers keeps in a `ModuleList` are named
`<list>_<i>` (`resnets_0`, `to_out_0`), which is what makes the checkpoint mapping mechanical
(see `ltg_jax.weights`). Parameters are float32 (`param_dtype`); `dtype` is the compute dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltg_jax.models.conv import conv_general_dilated

Dtype = jnp.dtype | type
REMAT_SCOPES = ("none", "decoder", "all")
# What a recomputed block keeps for its backward pass (names in jax.checkpoint_policies):
# nothing (recompute all: least memory), or the matmul outputs (recompute only the cheap
# elementwise work, GroupNorm and SiLU: fewer FLOPs, more memory).
REMAT_SAVE_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")


def check_remat(remat: str) -> tuple[str, str]:
    """'scope' or 'scope:policy' -> (scope, policy), e.g. 'decoder:dots_saveable'.

    scope: none | decoder | all (which blocks are recomputed in the backward pass); policy:
    one of REMAT_SAVE_POLICIES, default nothing_saveable.
    """
    scope, _, policy = remat.partition(":")
    policy = policy or "nothing_saveable"
    if scope not in REMAT_SCOPES or policy not in REMAT_SAVE_POLICIES:
        raise ValueError(
            f"remat={remat!r}: use a scope {REMAT_SCOPES}, optionally ':' and a "
            f"jax.checkpoint_policies name {REMAT_SAVE_POLICIES}, e.g. 'decoder:dots_saveable'"
        )
    return scope, policy


def remat_policy(remat: str, covered_by: tuple[str, ...]) -> str | None:
    """The checkpoint policy of a part that the scopes `covered_by` recompute, else None."""
    scope, policy = check_remat(remat)
    return policy if scope in covered_by else None


def maybe_remat(target, policy: str | None):
    """`nn.remat(target)` under jax.checkpoint_policies.<policy>; target itself when None."""
    if policy is None:
        return target
    return nn.remat(target, policy=getattr(jax.checkpoint_policies, policy))


def group_norm(groups: int, eps: float, dtype: Dtype, name: str) -> nn.GroupNorm:
    """torch.nn.GroupNorm equivalent (exact two-pass variance: fixtures match to 1e-5)."""
    return nn.GroupNorm(
        num_groups=groups, epsilon=eps, dtype=dtype, use_fast_variance=False, name=name
    )


def layer_norm(eps: float, dtype: Dtype, name: str) -> nn.LayerNorm:
    """torch.nn.LayerNorm equivalent over the last axis."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


def conv(
    features: int,
    kernel: int,
    dtype: Dtype,
    name: str | None,
    stride: int = 1,
    padding=None,
    use_bias: bool = True,
) -> nn.Conv:
    """Conv with torch's symmetric `kernel // 2` padding unless `padding` is given."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)) if padding is None else padding,
        use_bias=use_bias,
        dtype=dtype,
        name=name,
        conv_general_dilated=conv_general_dilated,
    )


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int, mask: jax.Array | None = None
) -> jax.Array:
    """Multi-head attention. q [B,Lq,H*d], k/v [B,Lk,H*d], mask [Lq,Lk] bool -> [B,Lq,H*d].

    `jax.nn.dot_product_attention`: XLA's fused attention, cuDNN flash attention on GPUs
    where it applies (bf16/fp16). Logits and softmax are float32 whatever the compute dtype
    (diffusers' upcast_attention), so bf16 runs stay stable.
    """
    b, lq, inner = q.shape
    d = inner // num_heads
    split = lambda t: t.reshape(t.shape[0], t.shape[1], num_heads, d)
    k, v = split(k), split(v)
    chunk = query_chunk(lq, k.shape[1])
    if mask is not None or chunk == lq:
        out = jax.nn.dot_product_attention(
            split(q), k, v, mask=None if mask is None else mask[None, None]
        )
        return out.reshape(b, lq, inner)
    # Long sequences (SD 2.1 at 768 px: 9,216 tokens) in blocks of queries, so that the
    # [B, H, chunk, Lk] logits, not [B, H, Lq, Lk], bound the memory (diffusers' sliced
    # attention); every query row sees all keys, so the result is the same.
    # Each block is recomputed in the backward pass (jax.checkpoint), so a gradient through
    # it holds one block's logits at a time, not every block's (flash attention's trade).
    blocks = split(q).reshape(b, lq // chunk, chunk, num_heads, d).swapaxes(0, 1)
    block_attention = jax.checkpoint(lambda qb, k, v: jax.nn.dot_product_attention(qb, k, v))
    out = jax.lax.map(lambda qb: block_attention(qb, k, v), blocks)
    return out.swapaxes(0, 1).reshape(b, lq, inner)


MAX_LOGITS_PER_BLOCK = 2**24  # query x key elements of one block (per batch row and head)


def query_chunk(lq: int, lk: int) -> int:
    """The largest divisor of lq whose [chunk, lk] logits stay within MAX_LOGITS_PER_BLOCK."""
    if lq * lk <= MAX_LOGITS_PER_BLOCK:
        return lq
    target = max(1, MAX_LOGITS_PER_BLOCK // lk)
    return max(c for c in range(1, min(lq, target) + 1) if lq % c == 0)


class ResnetBlock2D(nn.Module):
    """diffusers ResnetBlock2D (time_embedding_norm="default"); temb [B,T] optional."""

    out_channels: int
    groups: int
    eps: float
    output_scale_factor: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        h = nn.silu(group_norm(self.groups, self.eps, self.dtype, "norm1")(x))
        h = conv(self.out_channels, 3, self.dtype, "conv1")(h)
        if temb is not None:
            t = nn.Dense(self.out_channels, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))
            h = h + t[:, None, None, :]
        h = nn.silu(group_norm(self.groups, self.eps, self.dtype, "norm2")(h))
        h = conv(self.out_channels, 3, self.dtype, "conv2")(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, self.dtype, "conv_shortcut")(x)
        return (x + h) / self.output_scale_factor


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv; `vae_padding` pads right/bottom only (diffusers padding=0)."""

    channels: int
    vae_padding: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = ((0, 1), (0, 1)) if self.vae_padding else ((1, 1), (1, 1))
        return conv(self.channels, 3, self.dtype, "conv", stride=2, padding=pad)(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 upsampling then a 3x3 conv."""

    channels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv(self.channels, 3, self.dtype, "conv")(x)


class SpatialSelfAttention(nn.Module):
    """The VAE mid-block Attention: GroupNorm, single-head self-attention, residual."""

    channels: int
    groups: int
    eps: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        y = group_norm(self.groups, self.eps, self.dtype, "group_norm")(x).reshape(b, h * w, c)
        dense = lambda name: nn.Dense(self.channels, dtype=self.dtype, name=name)
        y = attention(dense("to_q")(y), dense("to_k")(y), dense("to_v")(y), num_heads=1)
        y = dense("to_out_0")(y).reshape(b, h, w, c)
        return x + y


class CrossAttention(nn.Module):
    """diffusers Attention as used by BasicTransformerBlock (no q/k/v bias)."""

    query_dim: int
    num_heads: int
    head_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        context = x if context is None else context
        inner = self.num_heads * self.head_dim
        dense = lambda name: nn.Dense(inner, use_bias=False, dtype=self.dtype, name=name)
        y = attention(
            dense("to_q")(x), dense("to_k")(context), dense("to_v")(context), self.num_heads
        )
        return nn.Dense(self.query_dim, dtype=self.dtype, name="to_out_0")(y)


class GEGLU(nn.Module):
    """Gated GELU projection: one Dense to 2*inner, value * gelu(gate) (exact erf GELU)."""

    inner_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        value, gate = jnp.split(
            nn.Dense(2 * self.inner_dim, dtype=self.dtype, name="proj")(x), 2, axis=-1
        )
        return value * nn.gelu(gate, approximate=False)


class BasicTransformerBlock(nn.Module):
    """Pre-LN self-attention, cross-attention and GEGLU feed-forward, each residual."""

    dim: int
    num_heads: int
    head_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        attn = lambda name: CrossAttention(
            self.dim, self.num_heads, self.head_dim, self.dtype, name=name
        )
        x = x + attn("attn1")(layer_norm(1e-5, self.dtype, "norm1")(x))
        x = x + attn("attn2")(layer_norm(1e-5, self.dtype, "norm2")(x), context)
        return x + FeedForward(self.dim, self.dtype, name="ff")(
            layer_norm(1e-5, self.dtype, "norm3")(x)
        )


class FeedForward(nn.Module):
    """GEGLU MLP; keeps diffusers' ModuleList numbering (net.0 = GEGLU, net.1 = dropout)."""

    dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = GEGLU(4 * self.dim, self.dtype, name="net_0")(x)
        return nn.Dense(self.dim, dtype=self.dtype, name="net_2")(h)


class Transformer2DModel(nn.Module):
    """Spatial transformer: GroupNorm, proj_in, `depth` transformer blocks, proj_out, residual.

    `use_linear_projection` (SD 2.x) uses Dense projections on tokens; otherwise 1x1 convs.
    """

    num_heads: int
    head_dim: int
    depth: int = 1
    groups: int = 32
    use_linear_projection: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        b, hgt, wid, c = x.shape
        inner = self.num_heads * self.head_dim
        h = group_norm(self.groups, 1e-6, self.dtype, "norm")(x)
        if self.use_linear_projection:
            h = nn.Dense(inner, dtype=self.dtype, name="proj_in")(h.reshape(b, hgt * wid, c))
        else:
            h = conv(inner, 1, self.dtype, "proj_in")(h).reshape(b, hgt * wid, inner)
        for i in range(self.depth):
            block = BasicTransformerBlock(
                inner, self.num_heads, self.head_dim, self.dtype, name=f"transformer_blocks_{i}"
            )
            h = block(h, context)
        if self.use_linear_projection:
            h = nn.Dense(c, dtype=self.dtype, name="proj_out")(h).reshape(b, hgt, wid, c)
        else:
            h = conv(c, 1, self.dtype, "proj_out")(h.reshape(b, hgt, wid, inner))
        return h + x


def as_tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    """Broadcast an int config entry to one value per block (diffusers' int-or-list fields)."""
    return (value,) * n if isinstance(value, int) else tuple(value)
