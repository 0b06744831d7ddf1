"""Class-label conditioning for class-conditional LDMs, shipped as `class_embedder/` in a folder.

Folder format (ours; diffusers has no such component):
    class_embedder/config.json        {"_class_name": "ClassEmbedder", "num_classes": K,
                                       "embedding_dim": D}
    class_embedder/diffusion_pytorch_model.safetensors   one tensor `embedding.weight` [K+1, D]
K counts the real classes only; row K is the learned null class used for classifier-free
guidance. The UNet sees a class as a one-token context [B,1,D] (cross_attention_dim = D).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class ClassEmbedder(nn.Module):
    """labels [B] int in [0, K] (K = null class) -> context [B,1,D] float32."""

    num_classes: int
    embedding_dim: int

    def dummy_inputs(self) -> tuple[jax.Array]:
        """Smallest valid input for abstract init."""
        return (jnp.zeros((1,), jnp.int32),)

    @nn.compact
    def __call__(self, labels: jax.Array) -> jax.Array:
        table = nn.Embed(self.num_classes + 1, self.embedding_dim, name="embedding")
        return table(labels)[:, None, :]


def class_embedder_from_config(
    config: Mapping[str, Any], *, source: str = "class_embedder/config.json"
) -> ClassEmbedder:
    """Build the module from its config.json dict."""
    missing = [k for k in ("num_classes", "embedding_dim") if k not in config]
    if missing:
        raise ValueError(f"{source}: missing {missing}; expected num_classes and embedding_dim")
    return ClassEmbedder(int(config["num_classes"]), int(config["embedding_dim"]))


def class_context(
    embedder: ClassEmbedder, params: Mapping[str, Any], labels: jax.Array
) -> jax.Array:
    """labels [B] (use `embedder.num_classes` for the unconditional branch) -> [B,1,D]."""
    return embedder.apply({"params": params}, labels)
