"""Tiny stand-ins for UNet, VAE decoder and classifier, shared by the sampler/guidance tests."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltg_jax import sampling

LATENT = (4, 4, 4)  # (h, w, c)
NUM_CLASSES = 3
S_VAE = 0.5  # toy VAE scaling factor: decode divides by it
SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


class ToyEps(nn.Module):
    """Conv noise predictor with timestep and class embeddings (class NUM_CLASSES = null)."""

    @nn.compact
    def __call__(self, z, t, labels):
        temb = jnp.stack([jnp.sin(t / 100.0), jnp.cos(t / 300.0)], -1).astype(z.dtype)
        emb = nn.Dense(8)(temb) + nn.Embed(NUM_CLASSES + 1, 8)(labels).astype(z.dtype)
        h = nn.Conv(8, (3, 3))(z) + emb[:, None, None, :]
        return nn.Conv(LATENT[-1], (3, 3))(jnp.tanh(h)) + 0.5 * z


class ToyDecoder(nn.Module):
    """Latents 4x4x4 -> images 16x16x1 in [-1, 1]: 1x1 conv, 4x nearest upsample, tanh."""

    @nn.compact
    def __call__(self, z):
        h = nn.Conv(1, (1, 1))(z / S_VAE)
        h = jnp.repeat(jnp.repeat(h, 4, axis=1), 4, axis=2)
        return jnp.tanh(nn.Conv(1, (3, 3))(h))


class ToyClassifier(nn.Module):
    """Images -> logits [B, NUM_CLASSES]."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(NUM_CLASSES)(jnp.tanh(nn.Dense(16)(x.reshape(x.shape[0], -1))))


def entropy_signal(logits: jax.Array) -> jax.Array:
    """H(softmax(l)) per sample [B]."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


@jax.jit
def _init(key: jax.Array) -> dict:
    """Params of all three toy models in one pytree (jitted: eager init is slow)."""
    k1, k2, k3 = jax.random.split(key, 3)
    z = jnp.zeros((1, *LATENT))
    return {
        "unet": ToyEps().init(k1, z, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)),
        "vae": ToyDecoder().init(k2, z),
        "clf": ToyClassifier().init(k3, jnp.zeros((1, 16, 16, 1))),
    }


def init_params(seed: int = 0) -> dict:
    """Params of all three toy models in one pytree."""
    return _init(jax.random.key(seed))


def eps_fn(params, z, t, labels):
    return ToyEps().apply(params["unet"], z, t.astype(z.dtype), labels)


def decode_fn(params, z):
    return ToyDecoder().apply(params["vae"], z)


def signal_fn(params, images, labels):
    del labels
    return entropy_signal(ToyClassifier().apply(params["clf"], images))


def null_cond(labels):
    return jnp.full_like(labels, NUM_CLASSES)


def models(with_signal: bool = True, with_cfg: bool = True) -> sampling.SamplerModels:
    """The toy SamplerModels."""
    return sampling.SamplerModels(
        eps_fn=eps_fn,
        decode_fn=decode_fn,
        signal_fn=signal_fn if with_signal else None,
        null_cond=null_cond if with_cfg else None,
        latent_shape=LATENT,
    )


def config(num_steps: int = 4, **guidance) -> dict:
    """A small sampler config dict with the given guidance switches."""
    return {
        "scheduler": SCHEDULER,
        "num_steps": num_steps,
        "eta": 0.5,
        "cfg_scale": 2.0,
        "guidance": guidance,
    }
