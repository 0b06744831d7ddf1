"""Adapters from a loaded diffusers-format pipeline to the sampler's pure callables."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from ltg_jax import models, sampling, weights

PyTree = Any


def class_conditional_models(pipe: weights.Pipeline) -> sampling.SamplerModels:
    """Sampler callables of a class-conditional pipeline; params = {'unet','vae','class_embedder'}.

    The conditioning is the class id [B]; the null class (K) is the unconditional branch.
    """
    unet, vae, embedder = pipe.unet, pipe.vae, pipe.class_embedder
    scale = float(pipe.vae_config.get("scaling_factor", 1.0))
    latent_hw = int(pipe.unet_config["sample_size"])

    def eps_fn(params, z, t, labels):
        context = models.class_context(embedder, params["class_embedder"], labels)
        return models.unet_apply(unet, params["unet"], z, t, context)

    return sampling.SamplerModels(
        eps_fn=eps_fn,
        decode_fn=lambda params, z: models.decode_latents(vae, params["vae"], z, scale),
        signal_fn=None,
        null_cond=lambda labels: jnp.full_like(labels, embedder.num_classes),
        latent_shape=(latent_hw, latent_hw, int(pipe.unet_config["in_channels"])),
    )


def pipeline_params(pipe: weights.Pipeline) -> dict[str, PyTree]:
    """The params pytree `class_conditional_models` expects."""
    return {
        "unet": pipe.unet_params,
        "vae": pipe.vae_params,
        "class_embedder": pipe.class_embedder_params,
    }
