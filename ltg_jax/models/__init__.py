"""Flax Stable-Diffusion stack whose parameter trees map 1:1 onto diffusers/transformers.

Every module has a `*_from_config(config_dict)` builder and a `dummy_inputs()` method, so
`abstract_params` (shapes only) and `init_params` (fast random init) work for all of them.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ltg_jax.models import defaults
from ltg_jax.models.class_embedder import ClassEmbedder, class_context, class_embedder_from_config
from ltg_jax.models.clip import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    clip_encode,
    clip_from_config,
    clip_penultimate,
)
from ltg_jax.models.defaults import UnsupportedModelError, fill_defaults
from ltg_jax.models.tokenizer import load_clip_tokenizer, tokenize, tokenizer_files_problem
from ltg_jax.models.unet import UNet2DConditionModel, unet_apply, unet_from_config
from ltg_jax.models.vae import (
    AutoencoderKL,
    decode_latents,
    sample_posterior,
    vae_decode,
    vae_encode,
    vae_from_config,
)
from ltg_jax.models.vae_tiny import AutoencoderTiny, tiny_decode, vae_tiny_from_config

Params = dict[str, Any]


def abstract_params(module: nn.Module) -> Params:
    """Parameter ShapeDtypeStructs via jax.eval_shape: no memory, no compute."""
    init = lambda: module.init(jax.random.key(0), *module.dummy_inputs())["params"]
    return jax.eval_shape(init)


@functools.partial(jax.jit, static_argnums=1)
def _truncated_normals(rng: jax.Array, n: int) -> jax.Array:
    """n draws of a standard normal truncated to [-2, 2] (flax's lecun_normal base)."""
    return jax.random.truncated_normal(rng, -2.0, 2.0, (n,), jnp.float32)


def init_params(module: nn.Module, rng: jax.Array) -> Params:
    """Random float32 parameters: abstract init, then materialise each leaf from one draw.

    Shapes come from eval_shape (tracing only); values follow flax's defaults (lecun_normal
    kernels, N(0, 1/D) embeddings, zero biases, unit scales). Drawing one flat vector and
    slicing it avoids compiling the whole forward pass, which `jax.jit(module.init)` would.
    """
    flat = traverse_util.flatten_dict(abstract_params(module))
    sizes = [math.prod(a.shape) if p[-1] in ("kernel", "embedding") else 0 for p, a in flat.items()]
    draws = np.asarray(_truncated_normals(rng, max(sum(sizes), 1)))
    leaves, offset = {}, 0
    for (path, leaf), size in zip(flat.items(), sizes, strict=True):
        shape = leaf.shape
        if path[-1] == "kernel":  # lecun_normal: fan_in = in_features * receptive field
            std = (1.0 / math.prod(shape[:-1])) ** 0.5 / 0.87962566103423978
            value = draws[offset : offset + size].reshape(shape) * std
        elif path[-1] == "embedding":  # flax: N(0, 1/D); truncated here with the same variance
            value = (
                draws[offset : offset + size].reshape(shape)
                * shape[-1] ** -0.5
                / 0.87962566103423978
            )
        else:
            value = np.full(shape, 1.0 if path[-1] == "scale" else 0.0, np.float32)
        leaves[path] = jnp.asarray(value, jnp.float32)
        offset += size
    return traverse_util.unflatten_dict(leaves)


__all__ = [
    "AutoencoderKL",
    "AutoencoderTiny",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "ClassEmbedder",
    "Params",
    "UNet2DConditionModel",
    "UnsupportedModelError",
    "abstract_params",
    "class_context",
    "class_embedder_from_config",
    "clip_encode",
    "clip_from_config",
    "clip_penultimate",
    "decode_latents",
    "defaults",
    "fill_defaults",
    "init_params",
    "load_clip_tokenizer",
    "sample_posterior",
    "tokenize",
    "tiny_decode",
    "tokenizer_files_problem",
    "unet_apply",
    "unet_from_config",
    "vae_decode",
    "vae_encode",
    "vae_from_config",
    "vae_tiny_from_config",
]
