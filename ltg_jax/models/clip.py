"""CLIPTextModel (the SD text encoder) and CLIPTextModelWithProjection (SDXL's second) in Flax.

Parameter names follow transformers' CLIPTextModel without the `text_model.` prefix, e.g.
`encoder/layers_0/mlp/fc1/kernel` <-> `[text_model.]encoder.layers.0.mlp.fc1.weight`; the
projection model keeps it (`text_model/encoder/...`, `text_projection/kernel`), as its
checkpoints do. Like the SD pipelines, only the causal mask is applied (no padding mask).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltg_jax.models.defaults import fill_defaults
from ltg_jax.models.layers import Dtype, attention, layer_norm

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP (SD 1.x)
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # OpenCLIP (SD 2.x)
}


class CLIPOutput(NamedTuple):
    """transformers' fields: final-normed last state, pooled (or projected) EOS state, and
    `hidden_states` (the embeddings, then every layer's output, before the final norm)."""

    last_hidden_state: jax.Array
    pooler_output: jax.Array
    hidden_states: tuple[jax.Array, ...]


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer: causal self-attention then MLP, both residual."""

    hidden_size: int
    intermediate_size: int
    num_heads: int
    hidden_act: str
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        h = layer_norm(self.eps, self.dtype, "layer_norm1")(x)
        h = SelfAttention(self.hidden_size, self.num_heads, self.dtype, name="self_attn")(h, mask)
        x = x + h
        h = layer_norm(self.eps, self.dtype, "layer_norm2")(x)
        h = MLP(self.hidden_size, self.intermediate_size, self.hidden_act, self.dtype, name="mlp")(
            h
        )
        return x + h


class Encoder(nn.Module):
    """The stack of encoder layers; runs the first `num_layers - skip_layers` of them."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    hidden_act: str
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, skip_layers: int) -> tuple[jax.Array, ...]:
        """The embeddings and each layer's output (as transformers' hidden_states)."""
        states = [x]
        for i in range(self.num_layers):
            # At init every layer runs so that every parameter exists.
            if i < self.num_layers - skip_layers or self.is_initializing():
                x = EncoderLayer(
                    self.hidden_size,
                    self.intermediate_size,
                    self.num_heads,
                    self.hidden_act,
                    self.eps,
                    self.dtype,
                    name=f"layers_{i}",
                )(x, mask)
                states.append(x)
        return tuple(states)


class SelfAttention(nn.Module):
    """q/k/v/out projections with bias (CLIPAttention)."""

    hidden_size: int
    num_heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        dense = lambda name: nn.Dense(self.hidden_size, dtype=self.dtype, name=name)
        h = attention(
            dense("q_proj")(x), dense("k_proj")(x), dense("v_proj")(x), self.num_heads, mask
        )
        return dense("out_proj")(h)


class MLP(nn.Module):
    """fc1 -> activation -> fc2."""

    hidden_size: int
    intermediate_size: int
    hidden_act: str
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.intermediate_size, dtype=self.dtype, name="fc1")(x)
        x = ACTIVATIONS[self.hidden_act](x)
        return nn.Dense(self.hidden_size, dtype=self.dtype, name="fc2")(x)


class Embeddings(nn.Module):
    """Token + learned absolute position embeddings."""

    vocab_size: int
    hidden_size: int
    max_position_embeddings: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        tok = nn.Embed(self.vocab_size, self.hidden_size, dtype=self.dtype, name="token_embedding")
        pos = nn.Embed(
            self.max_position_embeddings,
            self.hidden_size,
            dtype=self.dtype,
            name="position_embedding",
        )
        return tok(input_ids) + pos(jnp.arange(input_ids.shape[-1]))[None]


class CLIPTextModel(nn.Module):
    """input_ids [B,L] int -> (hidden [B,L,D], pooled [B,D]), float32; with
    `output_hidden_states=True` a CLIPOutput that adds every layer's state.

    `skip_layers=k` stops k layers early and applies final_layer_norm, which is diffusers'
    `clip_skip=k` (k=1: the penultimate layer, as some SD fine-tunes expect).
    """

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407
    dtype: Dtype = jnp.float32

    def dummy_inputs(self) -> tuple[jax.Array]:
        """Smallest valid input for abstract init."""
        return (jnp.zeros((1, 1), jnp.int32),)

    @nn.compact
    def __call__(
        self, input_ids: jax.Array, skip_layers: int = 0, output_hidden_states: bool = False
    ) -> tuple[jax.Array, jax.Array] | CLIPOutput:
        length = input_ids.shape[-1]
        if length > self.max_position_embeddings:
            raise ValueError(
                f"{length} tokens > max_position_embeddings={self.max_position_embeddings}; "
                "truncate when tokenizing"
            )
        x = Embeddings(
            self.vocab_size,
            self.hidden_size,
            self.max_position_embeddings,
            self.dtype,
            name="embeddings",
        )(input_ids)
        mask = jnp.tril(jnp.ones((length, length), bool))
        states = Encoder(
            self.num_hidden_layers,
            self.hidden_size,
            self.intermediate_size,
            self.num_attention_heads,
            self.hidden_act,
            self.layer_norm_eps,
            self.dtype,
            name="encoder",
        )(x, mask, skip_layers)
        hidden = layer_norm(self.layer_norm_eps, self.dtype, "final_layer_norm")(states[-1])
        hidden = hidden.astype(jnp.float32)
        # transformers' pooling: eos_token_id == 2 marks legacy configs that pool at argmax id.
        if self.eos_token_id == 2:
            pos = jnp.argmax(input_ids, axis=-1)
        else:
            pos = jnp.argmax(input_ids == self.eos_token_id, axis=-1)
        pooled = jnp.take_along_axis(hidden, pos[:, None, None], axis=1)[:, 0]
        if not output_hidden_states:
            return hidden, pooled
        return CLIPOutput(hidden, pooled, tuple(h.astype(jnp.float32) for h in states))


class CLIPTextModelWithProjection(nn.Module):
    """CLIPTextModel whose pooled output goes through `text_projection` (no bias): SDXL's
    `text_encoder_2`, whose projected pooled output is the UNet's `text_embeds`."""

    text_model: CLIPTextModel
    projection_dim: int = 512

    def dummy_inputs(self) -> tuple[jax.Array]:
        return self.text_model.dummy_inputs()

    @nn.compact
    def __call__(
        self, input_ids: jax.Array, skip_layers: int = 0, output_hidden_states: bool = False
    ) -> tuple[jax.Array, jax.Array] | CLIPOutput:
        """As CLIPTextModel, the pooled output projected (transformers' `text_embeds`)."""
        out = CLIPOutput(*self.text_model(input_ids, skip_layers, output_hidden_states=True))
        projection = nn.Dense(
            self.projection_dim, use_bias=False, dtype=self.text_model.dtype, name="text_projection"
        )
        out = out._replace(pooler_output=projection(out.pooler_output).astype(jnp.float32))
        return out if output_hidden_states else out[:2]


TEXT_ARCHITECTURES = ("CLIPTextModel", "CLIPTextModelWithProjection")


def clip_from_config(
    config: Mapping[str, Any],
    *,
    dtype: Dtype = jnp.float32,
    source: str = "text_encoder/config.json",
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """Build the module from a transformers CLIPTextConfig config.json dict."""
    cfg = fill_defaults("text_encoder", config)
    archs = cfg.get("architectures") or ["CLIPTextModel"]
    if len(archs) != 1 or archs[0] not in TEXT_ARCHITECTURES:
        raise ValueError(
            f"{source}: architectures {archs} not supported; use one of {list(TEXT_ARCHITECTURES)}"
        )
    act = cfg["hidden_act"]
    if act not in ACTIVATIONS:
        raise ValueError(
            f"{source}: hidden_act {act!r} not supported; use one of {list(ACTIVATIONS)}"
        )
    text_model = CLIPTextModel(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        max_position_embeddings=cfg["max_position_embeddings"],
        hidden_act=act,
        layer_norm_eps=cfg["layer_norm_eps"],
        eos_token_id=cfg["eos_token_id"],
        dtype=dtype,
    )
    if archs[0] == "CLIPTextModel":
        return text_model
    return CLIPTextModelWithProjection(text_model, int(cfg["projection_dim"]))


def clip_encode(
    clip: CLIPTextModel, params: Mapping[str, Any], input_ids: jax.Array, skip_layers: int = 0
) -> jax.Array:
    """Token ids [B,L] -> context [B,L,D] f32 for the UNet's cross-attention."""
    return clip.apply({"params": params}, input_ids, skip_layers)[0]


def clip_penultimate(
    clip: CLIPTextModel | CLIPTextModelWithProjection,
    params: Mapping[str, Any],
    input_ids: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """SDXL's text features: (penultimate layer's output, not final-normed [B,L,D]; pooled
    [B,P], projected for the projection model), as diffusers' StableDiffusionXLPipeline."""
    out = clip.apply({"params": params}, input_ids, output_hidden_states=True)
    return out.hidden_states[-2], out.pooler_output
