"""Training of the embedded default's generative model: a small AutoencoderKL and a
class-conditional UNet2DConditionModel on the balanced Fashion-MNIST (`train/vae.py`,
`train/ldm.py` are thin wrappers). The result is exported as a diffusers-format folder that
`ltg_jax.weights.load_pipeline` loads exactly like a real Stable Diffusion folder.

Resumption is exact: batches are indexed by step and the whole state is checkpointed by orbax.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from ltg_jax import (
    checkpointing,
    checks,
    diffusion,
    evaluation,
    io,
    metrics,
    models,
    parallel,
    sampling,
    schedulers,
    weights,
    workdirs,
)
from ltg_jax import predictor_training as ptrain
from ltg_jax.data import datasets, fashion_mnist, pipeline

PyTree = Any
Array = jax.Array
VAE_CONFIG_FILE = "vae_config.json"
LATENTS_FILE = "latents.npz"
PIPELINE_DIR = "pipeline"

# ================================================================ configs as diffusers dicts


def vae_config_dict(model: Mapping[str, Any], scaling_factor: float = 1.0) -> dict[str, Any]:
    """diffusers AutoencoderKL config.json for our small VAE."""
    levels = len(model["block_out_channels"])
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": int(model["image_channels"]),
        "out_channels": int(model["image_channels"]),
        "block_out_channels": [int(c) for c in model["block_out_channels"]],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": int(model["layers_per_block"]),
        "latent_channels": int(model["latent_channels"]),
        "norm_num_groups": int(model["norm_num_groups"]),
        "sample_size": int(model["sample_size"]),
        "act_fn": "silu",
        "scaling_factor": float(scaling_factor),
    }


def unet_config_dict(model: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers UNet2DConditionModel config.json for our class-conditional UNet."""
    kinds = list(model["attention_levels"])
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": int(model["sample_size"]),
        "in_channels": int(model["latent_channels"]),
        "out_channels": int(model["latent_channels"]),
        "block_out_channels": [int(c) for c in model["block_out_channels"]],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in kinds],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in kinds[::-1]],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": int(model["layers_per_block"]),
        "attention_head_dim": int(model["num_heads"]),
        "cross_attention_dim": int(model["embedding_dim"]),
        "norm_num_groups": int(model["norm_num_groups"]),
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
    }


def class_embedder_config_dict(model: Mapping[str, Any]) -> dict[str, Any]:
    """Our class_embedder/config.json: K real classes, row K is the null class."""
    return {
        "_class_name": "ClassEmbedder",
        "num_classes": int(model["num_classes"]),
        "embedding_dim": int(model["embedding_dim"]),
    }


def scheduler_config_dict(schedule: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers DDIMScheduler scheduler_config.json."""
    return {
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": int(schedule["num_train_timesteps"]),
        "beta_start": float(schedule["beta_start"]),
        "beta_end": float(schedule["beta_end"]),
        "beta_schedule": str(schedule["beta_schedule"]),
        "prediction_type": "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": str(schedule["timestep_spacing"]),
    }


# ================================================================ shared training pieces


def ema_update(ema: PyTree, params: PyTree, decay: float) -> PyTree:
    """Exponential moving average of parameters."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def make_optimizer(train: Mapping[str, Any]) -> optax.GradientTransformation:
    """Gradient clipping + AdamW on warmup-cosine (the predictor's schedule)."""
    return optax.chain(
        optax.clip_by_global_norm(float(train["grad_clip"])), ptrain.make_optimizer(train)
    )


def train_loop(
    *,
    workdir: Path,
    config: ml_collections.ConfigDict,
    state: dict,
    start_step: int,
    manager,
    dataset,
    step_fn: Callable[[dict, dict], tuple[dict, dict]],
    on_checkpoint: Callable[[dict, int], None],
    desc: str,
) -> dict:
    """Steps `start_step..num_steps`, logging, checkpointing and calling `on_checkpoint`.

    `state` lives on the data mesh; each process feeds its rows of every global batch.
    `on_checkpoint` gets the state as host arrays. Returns the final state as host arrays.
    """
    mesh = parallel.data_mesh()
    writer = metrics.MetricsWriter(workdir, resume_step=start_step)
    num_steps = int(config.train.num_steps)
    batches = pipeline.iterate(dataset, start_step)
    bar = tqdm(
        range(start_step, num_steps),
        initial=start_step,
        total=num_steps,
        desc=desc,
        disable=not parallel.is_process_zero(),
    )
    tic = time.time()
    for step in bar:
        state, stats = step_fn(state, parallel.host_local_to_global(next(batches), mesh))
        done = step + 1
        checks.require_finite_step(
            done, {k: stats[k] for k in ("loss", "grad_norm")}, f"training the {desc} in {workdir}",
            "Lower --config.train.learning_rate (or raise grad_clip) and check the data for NaN",
        )  # fmt: skip
        if done % config.log_every == 0 or done == num_steps:
            stats = {k: float(v) for k, v in jax.device_get(stats).items()}
            stats["seconds_per_step"] = (time.time() - tic) / (done - start_step)
            writer.write(done, **stats)
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
        if done % config.checkpoint_every == 0 or done == num_steps:
            checkpointing.save(manager, done, state, force=done == num_steps)
            on_checkpoint(checkpointing.host_state(state), done)
    manager.close()
    return checkpointing.host_state(state)


# ================================================================ VAE


def _vae_module(model: Mapping[str, Any]) -> models.AutoencoderKL:
    return models.vae_from_config(vae_config_dict(model))


def vae_loss(
    vae: models.AutoencoderKL, params: PyTree, images: Array, rng: Array, kl_weight: float
) -> tuple[Array, dict[str, Array]]:
    """L1 reconstruction from a posterior sample + kl_weight · KL(q(z|x) ‖ N(0, I))."""
    mean, logvar = models.vae_encode(vae, params, images)
    z = models.sample_posterior(rng, mean, logvar)
    recon = models.vae_decode(vae, params, z)
    l1 = jnp.mean(jnp.abs(recon - images))
    kl = 0.5 * jnp.mean(mean**2 + jnp.exp(logvar) - 1.0 - logvar)
    return l1 + kl_weight * kl, {"l1": l1, "kl": kl}


def make_vae_step(vae: models.AutoencoderKL, tx: optax.GradientTransformation, config):
    """A jitted (state, batch) -> (state, stats) VAE update (rng folded from the step)."""
    kl_weight, seed = float(config.train.kl_weight), int(config.seed)

    @jax.jit
    def step(state, batch):
        rng = jax.random.fold_in(jax.random.key(seed), state["step"])
        grad_fn = jax.value_and_grad(vae_loss, argnums=1, has_aux=True)
        (loss, aux), grads = grad_fn(vae, state["params"], batch["image"], rng, kl_weight)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
        return new, {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    return step


def latent_scaling_factor(mean: np.ndarray) -> float:
    """1 / std of the latents, so that the diffusion model sees unit-variance latents."""
    return float(1.0 / np.std(mean))


def train_vae(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Trains the VAE on the balanced training set; writes vae_config.json and recon grids."""
    workdir = Path(workdir)
    checks.check_config_finite(config)
    vae = _vae_module(config.model)  # a bad model config fails here, before the claim
    tx = make_optimizer(config.train)
    params = checks.built(lambda: models.init_params(vae, jax.random.key(config.seed)))
    with workdirs.claim(workdir):
        return _train_vae(config, workdir, vae, tx, params)


def start_image_training(config, workdir: Path, params: PyTree, tx) -> tuple:
    """(state on the mesh, start step, checkpoint manager, training images) of a claimed workdir.

    Saves the config, restores the latest checkpoint (or starts from `params`) and opens the
    grain pipeline of the training split (no augmentation): what the VAE and the tiny
    decoder trainers share.
    """
    checkpointing.save_config(workdir, config)
    state, start = checkpointing.restore_or_init(
        manager := checkpointing.create_manager(workdir, save_every=config.checkpoint_every),
        parallel.replicate(ptrain.create_train_state(params, tx), parallel.data_mesh()),
    )
    dataset = pipeline.make_dataset(
        ptrain.data_source(config.data, "train"),
        batch_size=config.train.batch_size,
        seed=config.seed,
        augment_images=False,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return state, start, manager, dataset


def _train_vae(config, workdir: Path, vae, tx, params) -> dict[str, Any]:
    """train_vae's work once the workdir is claimed."""
    state, start, manager, dataset = start_image_training(config, workdir, params, tx)
    test = datasets.load_split(config.data, "test", max_examples=int(config.eval.max_examples))

    def on_checkpoint(state, step):
        first = {"image": test["image"][:32]}  # only what the grid shows
        recon = _decode(vae, state["params"], encode_mean(vae, state["params"], first))["image"]
        grid = np.concatenate([first["image"], np.asarray(recon)])
        if parallel.is_process_zero():
            io.save_grid(workdir / f"reconstructions_{step:06d}.png", grid, columns=16)

    state = train_loop(
        workdir=workdir,
        config=config,
        state=state,
        start_step=start,
        manager=manager,
        dataset=dataset,
        step_fn=make_vae_step(vae, tx, config),
        on_checkpoint=on_checkpoint,
        desc="vae",
    )
    mean = encode_mean(vae, state["params"], test)
    decode = functools.partial(_decode, vae, state["params"])
    recon = evaluation.batched_apply(decode, mean, 500)["image"]
    summary = {
        "test_l1": float(np.mean(np.abs(recon - test["image"]))),
        "scaling_factor": latent_scaling_factor(mean),
        "latent_shape": list(mean.shape[1:]),
    }
    if parallel.is_process_zero():
        io.atomic_write_json(
            workdir / VAE_CONFIG_FILE, vae_config_dict(config.model, summary["scaling_factor"])
        )
        io.atomic_write_json(workdir / "eval_test.json", summary)
    print(f"VAE: test L1 {summary['test_l1']:.4f}, scaling_factor {summary['scaling_factor']:.4f}")
    return summary


# The module is static and params an argument: one compile per VAE config and batch shape,
# not one per checkpoint (a closure over params would be a new function each call).
@functools.partial(jax.jit, static_argnums=0)
def _encode(vae: models.AutoencoderKL, params: PyTree, images: jax.Array) -> dict[str, jax.Array]:
    return {"mean": models.vae_encode(vae, params, images)[0]}


@functools.partial(jax.jit, static_argnums=0)
def _decode(vae: models.AutoencoderKL, params: PyTree, latents: jax.Array) -> dict[str, jax.Array]:
    return {"image": models.vae_decode(vae, params, latents)}


def encode_mean(vae: models.AutoencoderKL, params: PyTree, split: Mapping[str, np.ndarray]):
    """Posterior means [N,h,w,c] (unscaled) of a split's images, in batches."""
    encode = functools.partial(_encode, vae, params)
    return evaluation.batched_apply(encode, split["image"], 500)["mean"]


def load_vae(vae_workdir: str | os.PathLike) -> tuple[models.AutoencoderKL, PyTree, dict]:
    """The trained VAE of a `train/vae.py` workdir: (module, params, config.json dict)."""
    vae_workdir = Path(vae_workdir)
    config_path = vae_workdir / VAE_CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} is missing: train the VAE to the end first "
            f"(`python -m train.vae --config configs/vae.py --workdir {vae_workdir}`)."
        )
    vae_config = io.read_json(config_path)
    vae = models.vae_from_config(vae_config, source=str(config_path))
    state, step = checkpointing.restore_latest(vae_workdir)
    checkpointing.check_shapes(state["params"], models.abstract_params(vae), vae_workdir, step)
    return vae, jax.tree.map(jnp.asarray, state["params"]), vae_config


# ================================================================ LDM


def ldm_modules(model: Mapping[str, Any]):
    """(unet, class_embedder) described by `config.model`."""
    unet = models.unet_from_config(unet_config_dict(model))
    embedder = models.class_embedder_from_config(class_embedder_config_dict(model))
    return unet, embedder


def ldm_loss(
    unet,
    embedder,
    params: PyTree,
    latents: Array,
    labels: Array,
    rng: Array,
    alphas_cumprod,
    p_drop,
) -> tuple[Array, dict[str, Array]]:
    """ε-prediction MSE at uniform timesteps; labels dropped to the null class with p_drop."""
    t_rng, n_rng, d_rng = jax.random.split(rng, 3)
    b = latents.shape[0]
    t = jax.random.randint(t_rng, (b,), 0, alphas_cumprod.shape[0])
    noise = jax.random.normal(n_rng, latents.shape, latents.dtype)
    z_t = schedulers.add_noise(alphas_cumprod, latents, noise, t)
    drop = jax.random.bernoulli(d_rng, p_drop, (b,))
    labels = jnp.where(drop, embedder.num_classes, labels)
    context = models.class_context(embedder, params["class_embedder"], labels)
    eps = models.unet_apply(unet, params["unet"], z_t, t, context)
    mse = jnp.mean((eps - noise) ** 2)
    return mse, {"mse": mse}


def make_ldm_step(unet, embedder, tx, config, alphas_cumprod):
    """A jitted (state, batch{'latent','label'}) -> (state, stats) LDM update with EMA."""
    seed, p_drop = int(config.seed), float(config.train.label_dropout)
    decay = float(config.train.ema_decay)
    alphas_cumprod = jnp.asarray(alphas_cumprod, jnp.float32)

    @jax.jit
    def step(state, batch):
        rng = jax.random.fold_in(jax.random.key(seed), state["step"])
        grad_fn = jax.value_and_grad(ldm_loss, argnums=2, has_aux=True)
        (loss, aux), grads = grad_fn(
            unet, embedder, state["params"], batch["latent"], batch["label"], rng,
            alphas_cumprod, p_drop,
        )  # fmt: skip
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {
            "params": params,
            "ema_params": ema_update(state["ema_params"], params, decay),
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        return new, {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    return step


def cached_latents(
    workdir: Path, vae, vae_params, vae_config: dict, data_config, split: str = "train"
) -> dict[str, np.ndarray]:
    """Scaled posterior means of a split's images, computed once and kept in the workdir."""
    path = workdir / LATENTS_FILE
    if path.is_file():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    train = datasets.load_split(data_config, split)
    latents = encode_mean(vae, vae_params, train) * float(vae_config["scaling_factor"])
    arrays = {"latent": latents.astype(np.float32), "label": train["label"].astype(np.int32)}
    if parallel.is_process_zero():
        io.atomic_save_npz(path, **arrays)
    return arrays


def build_pipeline(
    unet, embedder, params: PyTree, vae, vae_params: PyTree, vae_config: dict, config
) -> weights.Pipeline:
    """The class-conditional LDM as a Pipeline (written by `weights.save_pipeline`)."""
    return weights.Pipeline(
        unet=unet,
        unet_params=params["unet"],
        vae=vae,
        vae_params=vae_params,
        unet_config=unet_config_dict(config.model),
        vae_config=vae_config,
        scheduler_config=scheduler_config_dict(config.schedule),
        class_embedder=embedder,
        class_embedder_params=params["class_embedder"],
        class_embedder_config=class_embedder_config_dict(config.model),
    )


def export_pipeline(pipe: weights.Pipeline, folder: Path) -> Path:
    """Writes the diffusers-format folder whole, then swaps it in (never half-written)."""
    staging = folder.with_name(f".{folder.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    weights.save_pipeline(pipe, staging)
    return io.replace_dir(staging, folder)


def pretrained_start(folder: str | os.PathLike, unet, embedder) -> tuple[tuple, PyTree]:
    """((vae, vae_params, vae_config), {'unet', 'class_embedder'} params) of a trained
    class-conditional folder, to fine-tune it: `config.model` must describe its UNet."""
    pipe = weights.load_pipeline(folder)
    if pipe.class_embedder is None:
        raise ValueError(
            f"--config.init_pipeline={folder}: not a class-conditional folder (no "
            "class_embedder/); give one exported by train.ldm (ltg_jax/assets/fashion_mnist_ldm)"
        )
    params = {"unet": pipe.unet_params, "class_embedder": pipe.class_embedder_params}
    wanted = {
        "unet": models.abstract_params(unet),
        "class_embedder": models.abstract_params(embedder),
    }
    shapes = jax.tree.map(lambda a: tuple(a.shape), params)
    if shapes != jax.tree.map(lambda a: tuple(a.shape), wanted):
        raise ValueError(
            f"--config.init_pipeline={folder}: its UNet / class embedder differ from config.model; "
            f"set config.model to match {Path(folder) / 'unet' / 'config.json'}"
        )
    return (pipe.vae, pipe.vae_params, pipe.vae_config), params


def class_grid_labels(num_classes: int, per_class: int) -> np.ndarray:
    """[num_classes * per_class] labels, one row of the grid per class."""
    return np.repeat(np.arange(num_classes, dtype=np.int32), per_class)


def train_ldm(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Trains the class-conditional UNet on cached VAE latents; exports the pipeline folder."""
    workdir = Path(workdir)
    checks.check_config_finite(config)
    unet, embedder = ldm_modules(config.model)  # a bad model config fails before the claim
    if config.init_pipeline:
        vae_parts, params = pretrained_start(config.init_pipeline, unet, embedder)
    else:
        vae_parts = load_vae(config.vae_workdir)
        rng = jax.random.key(config.seed)
        params = checks.built(
            lambda: {
                "unet": models.init_params(unet, rng),
                "class_embedder": models.init_params(embedder, jax.random.fold_in(rng, 1)),
            }
        )
    with workdirs.claim(workdir):
        return _train_ldm(config, workdir, vae_parts, unet, embedder, params)


def _train_ldm(config, workdir: Path, vae_parts, unet, embedder, params) -> dict[str, Any]:
    """train_ldm's work once the workdir is claimed."""
    vae, vae_params, vae_config = vae_parts
    checkpointing.save_config(workdir, config)
    tx = make_optimizer(config.train)
    init = {**ptrain.create_train_state(params, tx), "ema_params": params}
    init = parallel.replicate(init, parallel.data_mesh())
    manager = checkpointing.create_manager(workdir, save_every=config.checkpoint_every)
    state, start = checkpointing.restore_or_init(manager, init)
    arrays = cached_latents(
        workdir, vae, vae_params, vae_config, config.data, str(config.data_split)
    )
    dataset = pipeline.make_array_dataset(
        arrays, batch_size=config.train.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )  # fmt: skip
    alphas = schedulers.alphas_cumprod_from_config(scheduler_config_dict(config.schedule))
    sampler_config = {
        "scheduler": scheduler_config_dict(config.schedule),
        "num_steps": int(config.sample.num_steps),
        "cfg_scale": float(config.sample.cfg_scale),
    }
    grid_labels = class_grid_labels(embedder.num_classes, int(config.sample.grid_per_class))
    sampler = None

    def on_checkpoint(state, step):
        nonlocal sampler
        pipe = build_pipeline(
            unet, embedder, state["ema_params"], vae, vae_params, vae_config, config
        )
        if sampler is None:
            models_fn = diffusion.class_conditional_models(pipe)
            # The grid is small: each process draws it on its own first device.
            local = parallel.data_mesh(jax.local_devices()[:1])
            sampler = sampling.make_sampler(sampler_config, models_fn, local)
        out = sampler(
            diffusion.pipeline_params(pipe),
            np.arange(grid_labels.size, dtype=np.int32),
            grid_labels,
            jax.random.key(config.seed),
        )
        if parallel.is_process_zero():
            io.save_grid(
                workdir / f"samples_{step:06d}.png",
                np.asarray(out.images),
                columns=int(config.sample.grid_per_class),
            )
            export_pipeline(pipe, workdir / PIPELINE_DIR)

    train_loop(
        workdir=workdir,
        config=config,
        state=state,
        start_step=start,
        manager=manager,
        dataset=dataset,
        step_fn=make_ldm_step(unet, embedder, tx, config, alphas),
        on_checkpoint=on_checkpoint,
        desc="ldm",
    )
    print(f"exported the pipeline to {workdir / PIPELINE_DIR}")
    return {"pipeline": str(workdir / PIPELINE_DIR), "num_classes": fashion_mnist.NUM_CLASSES}
