"""Shared pieces of the benchmarks: model folders, the one-step functions, timing, XLA costs.

Two model settings, both built with random weights (timing does not depend on the values):
  embedded   the shipped Fashion-MNIST LDM's shapes (configs/ldm.py + configs/vae.py):
             class-conditional UNet on 8x8x4 latents, f=4 VAE to 32x32x1 images.
  tiny_sd    a tiny Stable-Diffusion-shaped text model: UNet with cross-attention on a
             [B,77,32] text context, a 4-level (f=8) VAE from 8x8x4 latents to 64x64x3.
Both are written as diffusers-format folders, so the PyTorch peer loads the same weights.
The signal is the shipped predictor's entropy (its images are resized to 32x32x1 in-graph).

Benchmarks never run in the pytest suite and never pass or fail on a threshold.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import ldm as ldm_configs
from configs import vae as vae_configs
from ltg_jax import (
    diffusion,
    guidance,
    ldm_training,
    models,
    predictor,
    sampling,
    weights,
)

SETTINGS = ("embedded", "tiny_sd")
VARIANTS = ("unguided", "z0", "unet")  # unguided, LTG grad_through=z0, LTG grad_through=unet
DEFAULT_WORKDIR = Path(os.environ.get("LTG_BENCH_DIR", "/tmp/ltg_bench"))
# The shipped LTG defaults (configs/ltg.py): 25 DDIM steps, CFG 3, w 2, unit-normalised g.
CFG_SCALE = 3.0
GUIDANCE_W = 2.0
NORMALISE = "unit"
SIGNAL = "entropy"
TEXT_LEN, TEXT_DIM = 77, 32  # tiny_sd text context [B, 77, 32] (random, as if encoded)

# SD 1.x's scheduler (scaled_linear betas, leading spacing), as in tests/fixtures/tiny_sd.
SD_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


# ================================================================ model folders


def tiny_sd_configs(
    latent: int = 8,
    unet_channels: Sequence[int] = (32, 64, 64),
    vae_channels: Sequence[int] = (16, 32, 64, 64),
    heads: int = 4,
    context_dim: int = TEXT_DIM,
    layers_per_block: int = 1,
    groups: int = 8,
) -> tuple[dict, dict]:
    """(unet config, vae config) of an SD-shaped model: cross-attention UNet, 4-level f=8 VAE."""
    n = len(unet_channels)
    unet = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": latent,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": list(unet_channels),
        # SD's layout: cross-attention everywhere but the lowest resolution.
        "down_block_types": ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": layers_per_block,
        "attention_head_dim": heads,
        "cross_attention_dim": context_dim,
        "norm_num_groups": groups,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
    }
    levels = len(vae_channels)
    vae = {
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": list(vae_channels),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": layers_per_block,
        "latent_channels": 4,
        "norm_num_groups": groups,
        "sample_size": latent * 2 ** (levels - 1),
        "act_fn": "silu",
        "scaling_factor": 0.18215,
    }
    return unet, vae


def _random_params(module, seed: int) -> Any:
    return models.init_params(module, jax.random.key(seed))


def build_embedded_pipeline(seed: int = 0) -> weights.Pipeline:
    """The embedded LDM's shapes (configs/ldm.py, configs/vae.py defaults), random weights."""
    ldm_cfg, vae_cfg = ldm_configs.get_config(), vae_configs.get_config()
    unet, embedder = ldm_training.ldm_modules(ldm_cfg.model)
    vae_config = ldm_training.vae_config_dict(vae_cfg.model, scaling_factor=0.65)
    vae = models.vae_from_config(vae_config)
    params = {"unet": _random_params(unet, seed), "class_embedder": _random_params(embedder, seed)}
    return ldm_training.build_pipeline(
        unet, embedder, params, vae, _random_params(vae, seed + 1), vae_config, ldm_cfg
    )


def build_tiny_sd_pipeline(
    seed: int = 0, *, dtype: Any = jnp.float32, remat: str = "none", params=None, **shape
) -> weights.Pipeline:
    """A text-conditional SD-shaped pipeline (no text encoder: contexts are given), random.

    `params` = (unet params, vae params) reuses weights (e.g. for another remat policy).
    """
    unet_config, vae_config = tiny_sd_configs(**shape)
    unet = models.unet_from_config(unet_config, dtype=dtype, remat=remat)
    vae = models.vae_from_config(vae_config, dtype=dtype, remat=remat)
    if params is None:
        params = (_random_params(unet, seed), _random_params(vae, seed + 1))
    return weights.Pipeline(
        unet=unet,
        unet_params=params[0],
        vae=vae,
        vae_params=params[1],
        unet_config=unet_config,
        vae_config=vae_config,
        scheduler_config=dict(SD_SCHEDULER),
    )


def ensure_folder(setting: str, workdir: Path = DEFAULT_WORKDIR) -> Path:
    """The setting's diffusers-format folder under workdir, written once (random weights)."""
    folder = Path(workdir) / setting
    if (folder / "model_index.json").is_file():
        return folder
    if setting == "embedded":
        pipe = build_embedded_pipeline()
    elif setting == "tiny_sd":
        pipe = build_tiny_sd_pipeline()
    else:
        raise ValueError(f"setting={setting!r}; use one of {SETTINGS}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    return ldm_training.export_pipeline(pipe, folder)


# ================================================================ our (JAX) side


@dataclasses.dataclass
class Setup:
    """One model setting, loaded for the JAX side."""

    setting: str
    folder: Path
    pipe: weights.Pipeline
    models: sampling.SamplerModels  # with the predictor signal
    params: Any  # {'diffusion', 'predictor'}
    bundle: predictor.PredictorBundle

    @property
    def text(self) -> bool:
        return not diffusion.is_class_conditional(self.pipe)


def load_setup(
    setting: str,
    folder: Path | None = None,
    *,
    remat: str = "none",
    dtype: Any = jnp.float32,
) -> Setup:
    """Loads a folder (default: the setting's random-weight folder) + the shipped predictor."""
    folder = ensure_folder(setting) if folder is None else Path(folder)
    pipe = weights.load_pipeline(folder, remat=remat, dtype=dtype)
    return setup_from_pipeline(setting, pipe, folder)


def setup_from_pipeline(setting: str, pipe: weights.Pipeline, folder: Path | None = None) -> Setup:
    """A loaded (or built) pipeline + the shipped predictor's entropy as the signal."""
    bundle = predictor.load_predictor_bundle(predictor.SHIPPED_PREDICTOR)
    base = diffusion.conditional_models(pipe)
    models_ = diffusion.with_signal(base, diffusion.predictor_signal(bundle, SIGNAL))
    params = diffusion.guided_params(diffusion.pipeline_params(pipe), bundle.params)
    return Setup(setting, folder, pipe, models_, params, bundle)


def make_cond(setup: Setup, batch: int, seed: int = 0) -> Any:
    """Conditioning of `batch` samples: class ids [B], or {'context','uncond','label'} (text)."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(batch) % 10).astype(np.int32)
    if not setup.text:
        return labels
    dim = int(setup.pipe.unet_config["cross_attention_dim"])
    ctx = rng.standard_normal((batch, TEXT_LEN, dim)).astype(np.float32)
    null = rng.standard_normal((1, TEXT_LEN, dim)).astype(np.float32)
    return {"context": ctx, "uncond": np.repeat(null, batch, 0), "label": labels}


def sampler_config(
    setup: Setup, variant: str = "z0", num_steps: int = 25, w: float = GUIDANCE_W
) -> sampling.SamplerConfig:
    """The shipped LTG sampling defaults with grad_through = variant (w = 0 if unguided)."""
    unguided = variant == "unguided"
    return sampling.SamplerConfig(
        scheduler=tuple(sorted(setup.pipe.scheduler_config.items())),
        num_steps=num_steps,
        cfg_scale=CFG_SCALE,
        guidance=guidance.GuidanceConfig(
            w=0.0 if unguided else w,
            grad_through="z0" if unguided else variant,
            normalise=NORMALISE,
        ),
    )


def make_step(setup: Setup, variant: str, num_steps: int = 25) -> Callable:
    """Jitted `step(params, z [B,h,w,c], cond, keys [B], i) -> (z_prev, signal)`: one step.

    `sampling.one_step`: the same pieces the sampler's scan body runs (CFG model call,
    `guidance.denoise_step`); the weight is a trace-time constant, so the guided program has
    no `lax.cond` and XLA's cost analysis counts exactly one branch.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; use one of {VARIANTS}")
    config = sampler_config(setup, variant, num_steps)
    return jax.jit(sampling.one_step(config, setup.models, guided=variant != "unguided"))


def step_inputs(setup: Setup, batch: int, seed: int = 0) -> tuple:
    """(params, z, cond, keys, i) for `make_step` at `batch` (device arrays)."""
    h, w, c = setup.models.latent_shape
    z = jax.random.normal(jax.random.key(seed), (batch, h, w, c), jnp.float32)
    keys = jax.random.split(jax.random.key(seed + 1), batch)
    cond = jax.tree.map(jnp.asarray, make_cond(setup, batch, seed))
    params = jax.device_put(setup.params)
    return params, z, cond, keys, jnp.asarray(3, jnp.int32)


# ================================================================ XLA costs


def cost(compiled) -> dict[str, float]:
    """XLA cost analysis of a compiled function: flops, transcendentals, bytes accessed."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    return {
        "flops": float(analysis.get("flops", float("nan"))),
        "transcendentals": float(analysis.get("transcendentals", float("nan"))),
        "bytes": float(analysis.get("bytes accessed", float("nan"))),
    }


def memory(compiled) -> dict[str, int]:
    """XLA memory analysis of a compiled function (bytes)."""
    m = compiled.memory_analysis()
    fields = ("temp", "argument", "output", "alias", "generated_code")
    return {f: int(getattr(m, f"{f}_size_in_bytes", -1)) for f in fields}


def compile_timed(jitted, *args) -> tuple[Any, float]:
    """(compiled, seconds to lower + compile)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


# ================================================================ timing


def block(x: Any) -> Any:
    """Wait for every array in a pytree (JAX or torch outputs)."""
    return jax.block_until_ready(x)


def interleaved_times(
    fns: dict[str, Callable[[], Any]],
    *,
    min_reps: int = 3,
    max_reps: int = 20,
    budget_s: float = 20.0,
) -> dict[str, list[float]]:
    """Wall times of each fn, called round-robin (so that machine noise hits all alike).

    Every fn is called once first (warm-up, not recorded); rounds continue until each has
    `min_reps` times and either `max_reps` rounds or `budget_s` seconds have passed.
    """
    for fn in fns.values():
        block(fn())
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    for r in range(max_reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - t0)
        if r + 1 >= min_reps and time.perf_counter() - start > budget_s:
            break
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


# ================================================================ reporting


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "host_cpu": cpu,
        "cores_visible": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "load_avg": os.getloadavg(),
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_jsonl(path: Path | None, record: dict[str, Any]) -> None:
    """Print a record and append it to path (if given) as one JSON line."""
    line = json.dumps(record, default=float)
    print(line, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(line + "\n")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
