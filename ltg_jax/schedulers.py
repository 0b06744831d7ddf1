"""DDIM and DPM-Solver++(2M) as pure functions over f32 tables, matching diffusers.

`ddim_schedule` / `dpm_schedule` turn a diffusers `scheduler_config.json` dict into a schedule
pytree (tables indexed by the step index `i = 0 .. S-1`, noisiest first) that a `lax.scan`
can carry or close over. Both share the fields the guidance step needs (`timesteps`,
`alpha_t` = ᾱ at step i, `alpha_prev` = ᾱ after it, `prediction_type`), and the generic
`solver_step(schedule, x0, eps, i, z, state, noise, eta)` advances either (DPM-Solver++ carries
the previous ẑ0 as its state). Tables are built in numpy with the same operations as
diffusers, so timesteps and ᾱ agree with it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

SOLVERS = ("ddim", "dpmsolver++")
PREDICTION_TYPES = ("epsilon", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")

# diffusers' DDIMScheduler.__init__ defaults, used for keys a config file leaves out.
DDIM_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": True,  # as diffusers: SD scheduler configs all set it to false themselves
    "clip_sample_range": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "thresholding": False,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}


@flax.struct.dataclass
class DDIMSchedule:
    """Per-step DDIM tables (f32) plus the static switches of the update."""

    timesteps: jax.Array  # [S] int32, model timestep of step i
    alpha_t: jax.Array  # [S] f32, ᾱ at timesteps[i]
    alpha_prev: jax.Array  # [S] f32, ᾱ at the previous timestep (final_alpha_cumprod at the end)
    alphas_cumprod: jax.Array  # [T] f32, full training table (for add_noise)
    prediction_type: str = flax.struct.field(pytree_node=False, default="epsilon")
    clip_sample: bool = flax.struct.field(pytree_node=False, default=False)
    clip_sample_range: float = flax.struct.field(pytree_node=False, default=1.0)

    @property
    def num_steps(self) -> int:
        """Number of inference steps S."""
        return int(self.timesteps.shape[0])


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """Glide cosine schedule (`squaredcos_cap_v2`), as diffusers' `betas_for_alpha_bar`."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = num_train_timesteps
    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return np.asarray(betas, dtype=np.float32)


def _f32_linspace(start: float, end: float, n: int) -> np.ndarray:
    """f32 linspace bit-identical to torch.linspace on CPU."""
    # torch fills the first half as start + i*step and the second as end - (n-1-i)*step with
    # a fused multiply-add in f32; f64 arithmetic on f32 inputs rounds once, like the fma.
    start32, end32 = np.float32(start), np.float32(end)
    if n == 1:
        return np.asarray([start32], dtype=np.float32)
    step = np.float64((end32 - start32) / np.float32(n - 1))
    idx = np.arange(n, dtype=np.float64)
    out = np.where(
        idx < n // 2,
        np.float64(start32) + step * idx,
        np.float64(end32) - step * (n - 1 - idx),
    )
    return out.astype(np.float32)


def betas_from_config(config: Mapping[str, Any]) -> np.ndarray:
    """Training beta table [T] f32 for a diffusers scheduler config."""
    cfg = {**DDIM_DEFAULTS, **dict(config)}
    n = int(cfg["num_train_timesteps"])
    if cfg["trained_betas"] is not None:
        betas = np.asarray(cfg["trained_betas"], dtype=np.float32)
    elif cfg["beta_schedule"] == "linear":
        betas = _f32_linspace(cfg["beta_start"], cfg["beta_end"], n)
    elif cfg["beta_schedule"] == "scaled_linear":
        betas = _f32_linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n) ** 2
    elif cfg["beta_schedule"] == "squaredcos_cap_v2":
        betas = _cosine_betas(n)
    else:
        raise ValueError(
            f"beta_schedule {cfg['beta_schedule']!r} is not supported; use one of {BETA_SCHEDULES}"
        )
    if cfg["rescale_betas_zero_snr"]:
        raise ValueError("rescale_betas_zero_snr=True is not supported; set it to False")
    return betas.astype(np.float32)


def alphas_cumprod_from_config(config: Mapping[str, Any]) -> np.ndarray:
    """ᾱ table [T] f32, bit-identical to diffusers (torch's CPU cumprod accumulates in f64)."""
    alphas = np.float32(1.0) - betas_from_config(config)
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def ddim_timesteps(config: Mapping[str, Any], num_inference_steps: int) -> np.ndarray:
    """Inference timesteps [S] int64, noisiest first, as `DDIMScheduler.set_timesteps`."""
    cfg = {**DDIM_DEFAULTS, **dict(config)}
    n_train, s = int(cfg["num_train_timesteps"]), int(num_inference_steps)
    if not 1 <= s <= n_train:
        raise ValueError(f"num_inference_steps={s} must be in [1, num_train_timesteps={n_train}]")
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        return np.linspace(0, n_train - 1, s).round()[::-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = n_train // s
        ts = (np.arange(0, s) * ratio).round()[::-1].copy().astype(np.int64)
        return ts + int(cfg["steps_offset"])
    if spacing == "trailing":
        ratio = n_train / s
        return np.round(np.arange(n_train, 0, -ratio)).astype(np.int64) - 1
    raise ValueError(
        f"timestep_spacing {spacing!r} is not supported; use one of {TIMESTEP_SPACINGS}"
    )


def ddim_schedule(
    config: Mapping[str, Any], num_inference_steps: int, *, clip_sample: bool | None = None
) -> DDIMSchedule:
    """Build the DDIM tables for S steps from a diffusers scheduler config dict.

    A config without `clip_sample` gets diffusers' default (True: x̂0 is clipped, as diffusers
    does); the keyword overrides the config.
    """
    cfg = {**DDIM_DEFAULTS, **dict(config)}
    if cfg["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type {cfg['prediction_type']!r} is not supported; "
            f"use one of {PREDICTION_TYPES}"
        )
    if cfg["thresholding"]:
        raise ValueError("thresholding=True is not supported; set it to False")
    acp = alphas_cumprod_from_config(cfg)
    ts = ddim_timesteps(cfg, num_inference_steps)
    final = np.float32(1.0) if cfg["set_alpha_to_one"] else acp[0]
    # diffusers steps back by num_train // S whatever the spacing; we keep that quirk.
    prev = ts - int(cfg["num_train_timesteps"]) // int(num_inference_steps)
    alpha_prev = np.where(prev >= 0, acp[np.clip(prev, 0, None)], final).astype(np.float32)
    return DDIMSchedule(
        timesteps=jnp.asarray(ts, jnp.int32),
        alpha_t=jnp.asarray(acp[ts], jnp.float32),
        alpha_prev=jnp.asarray(alpha_prev, jnp.float32),
        alphas_cumprod=jnp.asarray(acp, jnp.float32),
        prediction_type=cfg["prediction_type"],
        clip_sample=bool(cfg["clip_sample"]) if clip_sample is None else bool(clip_sample),
        clip_sample_range=float(cfg["clip_sample_range"]),
    )


# DPMSolverMultistepScheduler.__init__ defaults (the ones we support).
DPM_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in DDIM_DEFAULTS.items() if k not in ("clip_sample", "set_alpha_to_one")},
    "timestep_spacing": "linspace",
    "solver_order": 2,
    "algorithm_type": "dpmsolver++",
    "solver_type": "midpoint",
    "lower_order_final": True,
    "euler_at_final": False,
    "final_sigmas_type": "zero",
    "lambda_min_clipped": -math.inf,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_flow_sigmas": False,
    "variance_type": None,
}


@flax.struct.dataclass
class DPMSchedule:
    """Per-step DPM-Solver++ (multistep, order ≤ 2) tables plus static switches."""

    timesteps: jax.Array  # [S] int32
    sigmas: jax.Array  # [S+1] f32, σ = √((1−ᾱ)/ᾱ) at each step, then the final σ
    alpha_t: jax.Array  # [S] f32, ᾱ = 1/(σ_i²+1) at step i (for Tweedie and re-noising)
    alpha_prev: jax.Array  # [S] f32, ᾱ at σ_{i+1}
    first_order: jax.Array  # [S] bool, steps that take the first-order (DDIM-like) update
    alphas_cumprod: jax.Array  # [T] f32
    prediction_type: str = flax.struct.field(pytree_node=False, default="epsilon")
    heun: bool = flax.struct.field(pytree_node=False, default=False)  # solver_type
    clip_sample: bool = flax.struct.field(pytree_node=False, default=False)  # never for DPM
    clip_sample_range: float = flax.struct.field(pytree_node=False, default=1.0)

    @property
    def num_steps(self) -> int:
        """Number of inference steps S."""
        return int(self.timesteps.shape[0])


def _dpm_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Config with DPM defaults, rejecting the variants we do not implement."""
    cfg = {**DPM_DEFAULTS, **dict(config)}
    unsupported = {
        "algorithm_type": ("dpmsolver++",),
        "solver_order": (1, 2),
        "solver_type": ("midpoint", "heun"),
        "final_sigmas_type": ("zero", "sigma_min"),
        "use_karras_sigmas": (False,),
        "use_exponential_sigmas": (False,),
        "use_beta_sigmas": (False,),
        "use_lu_lambdas": (False,),
        "use_flow_sigmas": (False,),
        "variance_type": (None,),
        "thresholding": (False,),
        "prediction_type": PREDICTION_TYPES,
    }
    for key, allowed in unsupported.items():
        if cfg[key] not in allowed:
            raise ValueError(
                f"DPM-Solver {key}={cfg[key]!r} is not supported; use one of {allowed}"
            )
    if cfg["lambda_min_clipped"] != -math.inf:
        raise ValueError("DPM-Solver lambda_min_clipped must be -inf (the default)")
    return cfg


def dpm_timesteps(config: Mapping[str, Any], num_inference_steps: int) -> np.ndarray:
    """Inference timesteps [S] int64, as `DPMSolverMultistepScheduler.set_timesteps`."""
    cfg = _dpm_config(config)
    n_train, s = int(cfg["num_train_timesteps"]), int(num_inference_steps)
    if not 1 <= s <= n_train:
        raise ValueError(f"num_inference_steps={s} must be in [1, num_train_timesteps={n_train}]")
    last = n_train  # no lambda_min_clipped clipping
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        return np.linspace(0, last - 1, s + 1).round()[::-1][:-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = last // (s + 1)
        ts = (np.arange(0, s + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64)
        return ts + int(cfg["steps_offset"])
    if spacing == "trailing":
        ratio = n_train / s
        return np.arange(last, 0, -ratio).round().copy().astype(np.int64) - 1
    raise ValueError(
        f"timestep_spacing {spacing!r} is not supported; use one of {TIMESTEP_SPACINGS}"
    )


def dpm_schedule(config: Mapping[str, Any], num_inference_steps: int) -> DPMSchedule:
    """DPM-Solver++(2M) tables for S steps from a diffusers scheduler config dict."""
    cfg = _dpm_config(config)
    acp = alphas_cumprod_from_config(cfg)
    ts = dpm_timesteps(cfg, num_inference_steps)
    s = len(ts)
    sigma_table = ((np.float32(1) - acp) / acp) ** np.float32(0.5)  # f32, as torch
    last = sigma_table[0] if cfg["final_sigmas_type"] == "sigma_min" else 0.0
    sigmas = np.concatenate([sigma_table[ts], [last]]).astype(np.float32)
    alpha_bar = (np.float32(1) / (sigmas**2 + np.float32(1))).astype(np.float32)
    # diffusers' lower-order rules: first step has no history; the final step is Euler when
    # it lands on σ = 0 (or for short schedules with lower_order_final).
    first = np.zeros(s, bool)
    first[0] = True
    first[-1] |= (
        cfg["euler_at_final"]
        or (cfg["lower_order_final"] and s < 15)
        or cfg["final_sigmas_type"] == "zero"
    )
    if int(cfg["solver_order"]) == 1:
        first[:] = True
    return DPMSchedule(
        timesteps=jnp.asarray(ts, jnp.int32),
        sigmas=jnp.asarray(sigmas),
        alpha_t=jnp.asarray(alpha_bar[:-1]),
        alpha_prev=jnp.asarray(alpha_bar[1:]),
        first_order=jnp.asarray(first),
        alphas_cumprod=jnp.asarray(acp),
        prediction_type=cfg["prediction_type"],
        heun=cfg["solver_type"] == "heun",
    )


def make_schedule(
    config: Mapping[str, Any], num_inference_steps: int, solver: str = "ddim"
) -> DDIMSchedule | DPMSchedule:
    """Schedule of the named solver ("ddim" or "dpmsolver++") from a diffusers config dict.

    Keys the solver does not use (another scheduler's, e.g. PNDM's `skip_prk_steps`) are
    ignored, like diffusers' `Scheduler.from_config`.
    """
    if solver == "ddim":
        return ddim_schedule(config, num_inference_steps)
    if solver == "dpmsolver++":
        return dpm_schedule(config, num_inference_steps)
    raise ValueError(f"solver {solver!r} is not supported; use one of {SOLVERS}")


def tweedie_x0(sample: jax.Array, eps: jax.Array, alpha_t: jax.Array) -> jax.Array:
    """Tweedie clean estimate ẑ0 = (z_t − √(1−ᾱ_t) ε) / √ᾱ_t."""
    return (sample - (1 - alpha_t) ** 0.5 * eps) / alpha_t**0.5


def predict_x0_eps(
    prediction_type: str, model_output: jax.Array, sample: jax.Array, alpha_t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(ẑ0, ε) from a model output of the given prediction type, as diffusers' step."""
    if prediction_type == "epsilon":
        return tweedie_x0(sample, model_output, alpha_t), model_output
    if prediction_type == "v_prediction":
        a, b = alpha_t**0.5, (1 - alpha_t) ** 0.5
        return a * sample - b * model_output, a * model_output + b * sample
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")


def ddim_sigma(alpha_t: jax.Array, alpha_prev: jax.Array, eta: float | jax.Array) -> jax.Array:
    """σ_t(η) = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_prev), DDIM eq. (16)."""
    variance = ((1 - alpha_prev) / (1 - alpha_t)) * (1 - alpha_t / alpha_prev)
    return eta * variance**0.5


def ddim_update(
    x0: jax.Array,
    eps: jax.Array,
    alpha_t: jax.Array,
    alpha_prev: jax.Array,
    noise: jax.Array | None,
    eta: float | jax.Array,
) -> jax.Array:
    """z_{t−1} = √ᾱ_prev ẑ0 + √(1−ᾱ_prev−σ²) ε + σ ξ (the noise term only when eta > 0)."""
    sigma = ddim_sigma(alpha_t, alpha_prev, eta)
    prev = alpha_prev**0.5 * x0 + (1 - alpha_prev - sigma**2) ** 0.5 * eps
    if noise is not None and not (isinstance(eta, (int, float)) and eta == 0):
        prev = prev + sigma * noise
    return prev


def step_alphas(
    schedule: DDIMSchedule | DPMSchedule, step_index: jax.Array | int
) -> tuple[jax.Array, jax.Array]:
    """(ᾱ_t, ᾱ_prev) for step i (scalars, f32)."""
    return schedule.alpha_t[step_index], schedule.alpha_prev[step_index]


def model_output_to_x0_eps(
    schedule: DDIMSchedule | DPMSchedule,
    model_output: jax.Array,
    step_index: jax.Array | int,
    sample: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(ẑ0, ε) for step i, with diffusers' optional clipping of ẑ0 (ε not re-derived)."""
    alpha_t, _ = step_alphas(schedule, step_index)
    x0, eps = predict_x0_eps(schedule.prediction_type, model_output, sample, alpha_t)
    if schedule.clip_sample:
        x0 = jnp.clip(x0, -schedule.clip_sample_range, schedule.clip_sample_range)
    return x0, eps


def ddim_step(
    schedule: DDIMSchedule,
    model_output: jax.Array,
    step_index: jax.Array | int,
    sample: jax.Array,
    noise: jax.Array | None = None,
    eta: float | jax.Array = 0.0,
) -> jax.Array:
    """One DDIM step z_t -> z_{t−1} for step index i (diffusers `DDIMScheduler.step`)."""
    alpha_t, alpha_prev = step_alphas(schedule, step_index)
    x0, eps = model_output_to_x0_eps(schedule, model_output, step_index, sample)
    return ddim_update(x0, eps, alpha_t, alpha_prev, noise, eta)


def renoise(
    prev_sample: jax.Array, alpha_t: jax.Array, alpha_prev: jax.Array, noise: jax.Array
) -> jax.Array:
    """Forward-diffuse z_{t−1} back to z_t with fresh noise (Universal-Guidance recurrence)."""
    ratio = alpha_t / alpha_prev
    return ratio**0.5 * prev_sample + (1 - ratio) ** 0.5 * noise


def add_noise(
    alphas_cumprod: jax.Array, x0: jax.Array, noise: jax.Array, timesteps: jax.Array
) -> jax.Array:
    """Forward diffusion z_t = √ᾱ_t x0 + √(1−ᾱ_t) ξ for per-sample timesteps [B]."""
    a = alphas_cumprod[timesteps].astype(x0.dtype)
    a = a.reshape(a.shape + (1,) * (x0.ndim - a.ndim))
    return a**0.5 * x0 + (1 - a) ** 0.5 * noise


def get_velocity(
    alphas_cumprod: jax.Array, x0: jax.Array, noise: jax.Array, timesteps: jax.Array
) -> jax.Array:
    """v-prediction target v = √ᾱ_t ξ − √(1−ᾱ_t) x0 for per-sample timesteps [B]."""
    a = alphas_cumprod[timesteps].astype(x0.dtype)
    a = a.reshape(a.shape + (1,) * (x0.ndim - a.ndim))
    return a**0.5 * noise - (1 - a) ** 0.5 * x0


def _dpm_alpha_sigma_lambda(sigma: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(α, σ_t, λ = log α − log σ_t) from the VE sigma, as diffusers (f32)."""
    alpha = 1 / (sigma**2 + 1) ** 0.5
    sigma_t = sigma * alpha
    return alpha, sigma_t, jnp.log(alpha) - jnp.log(sigma_t)


def dpm_update(
    schedule: DPMSchedule,
    x0: jax.Array,
    step_index: jax.Array | int,
    sample: jax.Array,
    prev_x0: jax.Array,
) -> jax.Array:
    """DPM-Solver++ multistep update from ẑ0 at step i and ẑ0 of step i−1 (order 1 or 2)."""
    i = step_index
    alpha_t, sigma_t, lambda_t = _dpm_alpha_sigma_lambda(schedule.sigmas[i + 1])
    _, sigma_s0, lambda_s0 = _dpm_alpha_sigma_lambda(schedule.sigmas[i])
    _, _, lambda_s1 = _dpm_alpha_sigma_lambda(schedule.sigmas[jnp.maximum(i - 1, 0)])
    h = lambda_t - lambda_s0
    first = schedule.first_order[i]
    # At the final σ = 0, h = inf and exp(-h) = 0: the update returns ẑ0, as in diffusers.
    expm = jnp.exp(-h) - 1.0
    base = (sigma_t / sigma_s0) * sample - (alpha_t * expm) * x0
    # Second-order correction; r0 is made safe where the step is first order (no history).
    r0 = jnp.where(first, 1.0, (lambda_s0 - lambda_s1) / h)
    d1 = (1.0 / r0) * (x0 - prev_x0)
    coef = alpha_t * (expm / h + 1.0) if schedule.heun else -0.5 * (alpha_t * expm)
    return jnp.where(first, base, base + coef * d1)


def init_solver_state(schedule: DDIMSchedule | DPMSchedule, sample: jax.Array) -> Any:
    """Initial solver state: () for DDIM, the previous ẑ0 (zeros) for DPM-Solver++."""
    return jnp.zeros_like(sample) if isinstance(schedule, DPMSchedule) else ()


def solver_step(
    schedule: DDIMSchedule | DPMSchedule,
    x0: jax.Array,
    eps: jax.Array,
    step_index: jax.Array | int,
    sample: jax.Array,
    state: Any,
    noise: jax.Array | None = None,
    eta: float | jax.Array = 0.0,
) -> tuple[jax.Array, Any]:
    """(z_{t−1}, new state) from (ẑ0, ε) at step i, for either solver (DPM ignores ε, η)."""
    if isinstance(schedule, DPMSchedule):
        return dpm_update(schedule, x0, step_index, sample, state), x0
    alpha_t, alpha_prev = step_alphas(schedule, step_index)
    return ddim_update(x0, eps, alpha_t, alpha_prev, noise, eta), state
