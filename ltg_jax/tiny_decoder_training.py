"""Distil a tiny decoder (AutoencoderTiny, TAESD format) from a pipeline's full VAE.

What guidance needs from D' is D'(ẑ0) ≈ D(ẑ0) where ẑ0 is a Tweedie estimate: on the data
manifold and off it. So the student decodes diffusion latents of real images (encoder means
· scaling_factor) perturbed by Gaussian noise of a random scale in [0, noise_max], and learns
the teacher's images of the same latents (L1 + L2). The tiny encoder learns the teacher's
latents (L2), so the saved folder is a whole AutoencoderTiny that diffusers loads too.

Writes, in the workdir: orbax checkpoints, metrics.jsonl, tiny_decoder/ (config.json +
diffusion_pytorch_model.safetensors: what --config.tiny_decoder takes), eval_test.json
(student vs teacher L1 on clean and noisy test latents; the decoders' FLOPs) and
comparison.png (rows: teacher, student).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import safetensors.numpy

from ltg_jax import (
    checks,
    diffusion,
    evaluation,
    io,
    ldm_training,
    models,
    parallel,
    weights,
    workdirs,
)
from ltg_jax.data import datasets

PyTree = Any
FOLDER = "tiny_decoder"


def tiny_config_dict(model: Mapping[str, Any], image_channels: int) -> dict[str, Any]:
    """diffusers' AutoencoderTiny config.json of `config.model` (scaling_factor 1.0, as TAESD)."""
    channels = [int(c) for c in model["channels"]]
    return {
        "_class_name": "AutoencoderTiny",
        "act_fn": "relu",
        "in_channels": image_channels,
        "out_channels": image_channels,
        "encoder_block_out_channels": channels,
        "decoder_block_out_channels": channels,
        "num_encoder_blocks": [int(b) for b in model["encoder_blocks"]],
        "num_decoder_blocks": [int(b) for b in model["decoder_blocks"]],
        "latent_channels": int(model["latent_channels"]),
        "latent_magnitude": 3,
        "latent_shift": 0.5,
        "scaling_factor": 1.0,
        "shift_factor": 0.0,
        "force_upcast": False,
        "upsample_fn": "nearest",
        "upsampling_scaling_factor": 2,
    }


def perturb(rng: jax.Array, z: jax.Array, noise_max: float) -> jax.Array:
    """a·z + σ·ε, a ~ U(0.5, 1), σ ~ U(0, noise_max) per sample: Tweedie-like estimates.

    Early in sampling x̂0 is a shrunk, blurred mean; guidance decodes those too.
    """
    k_a, k_sigma, k_eps = jax.random.split(rng, 3)
    shape = (z.shape[0], 1, 1, 1)
    a = jax.random.uniform(k_a, shape, minval=0.5, maxval=1.0)
    sigma = jax.random.uniform(k_sigma, shape, maxval=noise_max)
    return a * z + sigma * jax.random.normal(k_eps, z.shape)


def distil_loss(
    student: models.AutoencoderTiny,
    params: PyTree,
    teacher: tuple[models.AutoencoderKL, PyTree, float],
    images: jax.Array,
    rng: jax.Array,
    noise_max: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Decoder L1 + L2 against the teacher on perturbed latents, plus encoder L2."""
    vae, vae_params, scale = teacher
    z = scale * models.vae_encode(vae, vae_params, images)[0]  # diffusion latents
    z_in = perturb(rng, z, noise_max)
    target = jax.lax.stop_gradient(models.decode_latents(vae, vae_params, z_in, scale))
    out = models.tiny_decode(student, params, z_in, 1.0)
    l1, l2 = jnp.mean(jnp.abs(out - target)), jnp.mean((out - target) ** 2)
    enc = student.apply({"params": params}, images, method=models.AutoencoderTiny.encode)
    enc_l2 = jnp.mean((enc - z) ** 2)
    return l1 + l2 + enc_l2, {"decoder_l1": l1, "encoder_l2": enc_l2}


def make_step(student, teacher, tx: optax.GradientTransformation, config):
    """A jitted (state, batch) -> (state, stats) distillation update."""
    seed, noise_max = int(config.seed), float(config.train.noise_max)

    @jax.jit
    def step(state, batch):
        rng = jax.random.fold_in(jax.random.key(seed), state["step"])
        grad_fn = jax.value_and_grad(distil_loss, argnums=1, has_aux=True)
        (loss, aux), grads = grad_fn(
            student, state["params"], teacher, batch["image"], rng, noise_max
        )
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
        return new, {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    return step


def decoder_flops(decode, params: PyTree, z: jax.Array) -> dict[str, float]:
    """XLA's FLOP count of a decoder's forward and of forward + VJP (what guidance runs)."""

    def vjp(p, z):
        out, pull = jax.vjp(lambda z: decode(p, z), z)
        return pull(jnp.ones_like(out))[0]

    cost = lambda f: float(jax.jit(f).lower(params, z).compile().cost_analysis()["flops"])
    return {"forward": cost(decode), "forward_and_vjp": cost(vjp)}


def load_teacher(folder: str | os.PathLike) -> tuple[models.AutoencoderKL, PyTree, float]:
    """(vae, params, scaling_factor) of a pipeline folder."""
    pipe = weights.load_pipeline(folder)
    return pipe.vae, pipe.vae_params, diffusion.vae_scaling_factor(pipe)


def train_tiny_decoder(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> dict[str, Any]:
    """Distils the tiny decoder; writes tiny_decoder/ and eval_test.json; returns the eval."""
    workdir = Path(workdir)
    checks.check_config_finite(config)
    teacher = load_teacher(config.pipeline)
    channels = int(teacher[0].in_channels)
    tiny_config = tiny_config_dict(config.model, channels)
    student = models.vae_tiny_from_config(tiny_config, source="--config.model")
    tx = ldm_training.make_optimizer(config.train)
    params = checks.built(lambda: models.init_params(student, jax.random.key(config.seed)))
    with workdirs.claim(workdir):
        return _train(config, workdir, teacher, student, tiny_config, tx, params)


def _train(config, workdir: Path, teacher, student, tiny_config, tx, params) -> dict[str, Any]:
    """train_tiny_decoder's work once the workdir is claimed."""
    state, start, manager, dataset = ldm_training.start_image_training(config, workdir, params, tx)
    state = ldm_training.train_loop(
        workdir=workdir,
        config=config,
        state=state,
        start_step=start,
        manager=manager,
        dataset=dataset,
        step_fn=make_step(student, teacher, tx, config),
        on_checkpoint=lambda state, step: None,
        desc="tiny decoder",
    )
    test = datasets.load_split(config.data, "test", max_examples=int(config.eval.max_examples))
    summary, grid = evaluate(student, state["params"], teacher, test["image"], config)
    if parallel.is_process_zero():
        export(workdir / FOLDER, tiny_config, state["params"])
        io.atomic_write_json(workdir / "eval_test.json", summary)
        io.save_grid(workdir / "comparison.png", grid, columns=16)
    print(
        f"tiny decoder: L1 to the full decoder {summary['l1_clean']:.4f} (clean latents), "
        f"{summary['l1_noisy']:.4f} (noisy); forward+VJP FLOPs "
        f"{summary['flops_ratio_forward_and_vjp']:.3f} of the full decoder's"
    )
    return summary


@functools.partial(jax.jit, static_argnums=(0, 2, 4, 7))
def _pair(student, params, teacher_vae, teacher_params, scale, images, rng, noise):
    """(teacher, student) images of the same (optionally perturbed) latents of `images`."""
    z = scale * models.vae_encode(teacher_vae, teacher_params, images)[0]
    z = perturb(rng, z, noise) if noise else z
    return {
        "teacher": models.decode_latents(teacher_vae, teacher_params, z, scale),
        "student": models.tiny_decode(student, params, z, 1.0),
    }


def _apply(pair, rng: jax.Array, noise: float, images: jax.Array) -> dict[str, jax.Array]:
    return pair(images, rng, noise)


def evaluate(
    student, params, teacher, images: np.ndarray, config
) -> tuple[dict[str, Any], np.ndarray]:
    """L1 student vs teacher (clean and noisy latents), FLOPs of both decoders; a picture.

    The picture: 16 test images decoded by the teacher, then the same by the student.
    """
    vae, vae_params, scale = teacher
    rng = jax.random.key(int(config.seed) + 1)
    out = {}
    for name, noise in (("clean", 0.0), ("noisy", float(config.train.noise_max))):
        pair = functools.partial(_pair, student, params, vae, vae_params, scale)
        got = evaluation.batched_apply(functools.partial(_apply, pair, rng, noise), images, 500)
        out[f"l1_{name}"] = float(np.mean(np.abs(got["student"] - got["teacher"])))
        if name == "clean":
            grid = np.concatenate([got["teacher"][:16], got["student"][:16]])
    z = jnp.zeros((1, *models.vae_encode(vae, vae_params, images[:1])[0].shape[1:]))
    full = decoder_flops(lambda p, z: models.decode_latents(vae, p, z, scale), vae_params, z)
    tiny = decoder_flops(lambda p, z: models.tiny_decode(student, p, z, 1.0), params, z)
    out.update(
        full_decoder_flops=full,
        tiny_decoder_flops=tiny,
        flops_ratio_forward=tiny["forward"] / full["forward"],
        flops_ratio_forward_and_vjp=tiny["forward_and_vjp"] / full["forward_and_vjp"],
        examples=int(len(images)),
    )
    return out, grid


def export(folder: Path, tiny_config: Mapping[str, Any], params: PyTree) -> Path:
    """Writes the AutoencoderTiny folder (config.json + safetensors), atomically per file."""
    tensors = weights.params_to_tensors(params)
    io.atomic_write_bytes(
        folder / "diffusion_pytorch_model.safetensors",
        safetensors.numpy.save(tensors, metadata=dict(weights.PT_METADATA)),
    )
    io.atomic_write_json(folder / "config.json", dict(tiny_config))
    return folder
