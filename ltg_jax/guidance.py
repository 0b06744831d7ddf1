"""Longtail Guidance: the pure guidance step of docs/design.md §1.2 and its variants.

    ε      = ε_u + γ (ε_c − ε_u)                 (cfg_combine, done by the caller's eps closure)
    ẑ0(z_t) = (z_t − √(1−ᾱ_t) ε) / √ᾱ_t
    g      = ∇_{z_t} Σ_batch signal(D(ẑ0 / s_vae))
    ε̂      = ε − w √(1−ᾱ_t) · normalise(g)

`longtail_guidance` is that step on closures (ε of z_t, signal of ẑ0); `denoise_step` wraps it
with the solver update (DDIM, or DPM-Solver++ on ẑ0(ε̂)), the guidance window (a per-step
weight table; weight 0 takes the unguided branch of a `lax.cond`, so it is bit-identical to
unguided sampling) and the Universal-Guidance recurrence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltg_jax import schedulers

GRAD_THROUGH = ("unet", "z0")
NORMALISE = ("none", "latent_norm", "unit")
W_SCHEDULES = ("constant", "linear", "cosine")

# Tags folded into a sample's per-step key: one stream per use, so adding recurrence does
# not change the noise an unguided step draws.
_ETA_TAG, _RENOISE_TAG = 0, 1


@dataclasses.dataclass(frozen=True)
class GuidanceConfig:
    """Switches of the guidance step (all static: they shape the compiled program)."""

    w: float = 0.0  # guidance weight; 0 is the unguided baseline
    w_schedule: str = "constant"  # constant | linear | cosine (from w at step 0 to w_end)
    w_end: float | None = None  # weight at the last step for linear/cosine; None = w
    grad_through: str = "z0"  # "unet": gradient through ε_θ; "z0": ε held constant
    normalise: str = "none"  # none | latent_norm (‖g‖ := ‖z_t‖) | unit (‖g‖ := 1), per sample
    start: float = 0.0  # guide steps i with start ≤ i/S < end (i = 0 is the noisiest step)
    end: float = 1.0
    stride: int = 1  # guide every stride-th step of the window, counted from its first step
    recurrence: int = 1  # Universal-Guidance: run each guided step this many times

    def __post_init__(self):
        """Reject bad switches where they enter."""
        if self.grad_through not in GRAD_THROUGH:
            raise ValueError(f"grad_through={self.grad_through!r}; use one of {GRAD_THROUGH}")
        if self.normalise not in NORMALISE:
            raise ValueError(f"normalise={self.normalise!r}; use one of {NORMALISE}")
        if self.w_schedule not in W_SCHEDULES:
            raise ValueError(f"w_schedule={self.w_schedule!r}; use one of {W_SCHEDULES}")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"need 0 <= start <= end <= 1, got start={self.start} end={self.end}")
        if self.stride < 1 or self.recurrence < 1:
            raise ValueError(
                f"stride and recurrence must be >= 1, got {self.stride}, {self.recurrence}"
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ml_collections.ConfigDict | None):
        """Build from a ConfigDict/dict; unknown keys are an error (typos would silently no-op)."""
        if config is None:
            return cls()
        items = dict(config.items()) if hasattr(config, "items") else dict(config)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(items) - names)
        if unknown:
            raise ValueError(f"unknown guidance config keys {unknown}; known: {sorted(names)}")
        return cls(**items)


def default_config() -> ml_collections.ConfigDict:
    """Guidance defaults as a ConfigDict (the `guidance` block of a sampling config)."""
    fields = dataclasses.asdict(GuidanceConfig())
    # A typed placeholder so `--config.guidance.w_end=0.5` works from the command line.
    fields["w_end"] = ml_collections.config_dict.placeholder(float)
    return ml_collections.ConfigDict(fields)


def guidance_weights(config: GuidanceConfig, num_steps: int) -> np.ndarray:
    """Per-step weight table w_i [S] f32: the w schedule, zero outside the window/stride."""
    s = num_steps
    frac = np.arange(s, dtype=np.float64) / max(s - 1, 1)
    w0 = config.w
    w1 = config.w if config.w_end is None else config.w_end
    if config.w_schedule == "constant":
        w = np.full(s, w0, np.float64)
    elif config.w_schedule == "linear":
        w = w0 + (w1 - w0) * frac
    else:  # cosine: slow start and end, as the usual cosine ramp
        w = w1 + (w0 - w1) * 0.5 * (1 + np.cos(math.pi * frac))
    i = np.arange(s)
    # round() first so that e.g. 0.7 * 10 = 7.000000000000001 does not skip step 7.
    first, stop = (math.ceil(round(f * s, 9)) for f in (config.start, config.end))
    active = (i >= first) & (i < stop) & ((i - first) % config.stride == 0)
    return np.where(active, w, 0.0).astype(np.float32)


def cfg_combine(out_uncond: jax.Array, out_cond: jax.Array, scale: float) -> jax.Array:
    """Classifier-free guidance ε = ε_u + γ (ε_c − ε_u)."""
    return out_uncond + scale * (out_cond - out_uncond)


def _per_sample_norm(x: jax.Array) -> jax.Array:
    """L2 norm over all but the batch axis, shaped [B, 1, ..., 1] for broadcasting."""
    axes = tuple(range(1, x.ndim))
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def normalise_grad(g: jax.Array, z_t: jax.Array, mode: str) -> jax.Array:
    """Per-sample rescaling of the signal gradient g [B, h, w, c]."""
    if mode == "none":
        return g
    # A zero gradient stays zero rather than turning into NaN.
    unit = g / jnp.maximum(_per_sample_norm(g), jnp.finfo(g.dtype).tiny)
    if mode == "unit":
        return unit
    if mode == "latent_norm":
        return unit * _per_sample_norm(z_t)
    raise ValueError(f"normalise={mode!r}; use one of {NORMALISE}")


def longtail_guidance(
    eps_fn: Callable[[jax.Array], jax.Array],
    signal_of_x0: Callable[[jax.Array], jax.Array],
    z_t: jax.Array,
    alpha_t: jax.Array,
    w: jax.Array | float,
    *,
    grad_through: str = "z0",
    normalise: str = "none",
) -> tuple[jax.Array, jax.Array]:
    """Guided noise estimate (ε̂ [B, h, w, c], signal [B]) at z_t [B, h, w, c].

    `eps_fn(z_t) -> ε` is the CFG-combined ε-prediction of this step, `signal_of_x0(ẑ0) -> [B]`
    decodes the diffusion latents and scores them (higher = more longtail).
    """
    if grad_through not in GRAD_THROUGH:
        raise ValueError(f"grad_through={grad_through!r}; use one of {GRAD_THROUGH}")
    # "z0" runs ε_θ outside the differentiated function: no UNet backward pass.
    eps_const = eps_fn(z_t) if grad_through == "z0" else None

    def objective(z):
        eps = eps_fn(z) if eps_const is None else jax.lax.stop_gradient(eps_const)
        signal = signal_of_x0(schedulers.tweedie_x0(z, eps, alpha_t))
        return jnp.sum(signal), (signal, eps)

    (_, (signal, eps)), g = jax.value_and_grad(objective, has_aux=True)(z_t)
    g = normalise_grad(g, z_t, normalise)
    eps_hat = eps - (w * (1 - alpha_t) ** 0.5 * g).astype(eps.dtype)
    return eps_hat, signal


def nan_per_sample(z: jax.Array) -> jax.Array:
    """NaN signal [B] f32 for unguided steps (full_like keeps z's shard_map varying type)."""
    return jnp.full_like(z.reshape(z.shape[0], -1)[:, 0], jnp.nan, dtype=jnp.float32)


def step_noise(keys: jax.Array, tag: int, shape: tuple[int, ...]) -> jax.Array:
    """Per-sample standard normal noise [B, *shape] from typed keys [B] and a stream tag."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, tag), shape))(keys)


def denoise_step(
    model_fn: Callable[[jax.Array], jax.Array],
    signal_of_x0: Callable[[jax.Array], jax.Array] | None,
    schedule: schedulers.DDIMSchedule | schedulers.DPMSchedule,
    step_index: jax.Array,
    z_t: jax.Array,
    w_i: jax.Array,
    keys: jax.Array,
    config: GuidanceConfig,
    eta: float = 0.0,
    state: Any = (),
) -> tuple[jax.Array, jax.Array, Any]:
    """One (possibly guided) solver step: (z_{t−1} [B,h,w,c], signal [B] or NaN, solver state).

    `model_fn(z_t)` is the CFG-combined raw model output (ε or v, per the schedule), `keys`
    [B] this step's per-sample keys, `w_i` this step's weight from `guidance_weights`, `state`
    the solver state (`schedulers.init_solver_state`; () for DDIM). With `signal_of_x0=None`
    the step is the plain solver step, with no `lax.cond` at all.
    """
    alpha_t, alpha_prev = schedulers.step_alphas(schedule, step_index)
    sample_shape = z_t.shape[1:]
    eta_noise = (lambda r: step_noise(keys, 2 * r + _ETA_TAG, sample_shape)) if eta != 0 else None

    def advance(z, x0, eps, r):
        noise = None if eta_noise is None else eta_noise(r)
        return schedulers.solver_step(schedule, x0, eps, step_index, z, state, noise, eta)

    def unguided(z):
        x0, eps = schedulers.model_output_to_x0_eps(schedule, model_fn(z), step_index, z)
        prev, new_state = advance(z, x0, eps, 0)
        return prev, nan_per_sample(z), new_state

    if signal_of_x0 is None:
        return unguided(z_t)

    def eps_fn(z):
        return schedulers.predict_x0_eps(schedule.prediction_type, model_fn(z), z, alpha_t)[1]

    def guided_once(z, r):
        eps_hat, signal = longtail_guidance(
            eps_fn,
            signal_of_x0,
            z,
            alpha_t,
            w_i,
            grad_through=config.grad_through,
            normalise=config.normalise,
        )
        x0 = schedulers.tweedie_x0(z, eps_hat, alpha_t)
        if schedule.clip_sample:
            x0 = jnp.clip(x0, -schedule.clip_sample_range, schedule.clip_sample_range)
        prev, new_state = advance(z, x0, eps_hat, r)
        return prev, signal.astype(jnp.float32), new_state

    def guided(z):
        # Universal-Guidance recurrence: step, re-noise back to t with fresh noise, repeat;
        # every repeat starts from the same solver state, the last one's state is kept.
        def repeat(r, z):
            prev, _, _ = guided_once(z, r)
            fresh = step_noise(keys, 2 * r + _RENOISE_TAG, sample_shape)
            return schedulers.renoise(prev, alpha_t, alpha_prev, fresh).astype(z.dtype)

        z = jax.lax.fori_loop(0, config.recurrence - 1, repeat, z)
        return guided_once(z, config.recurrence - 1)

    # lax.cond, not w·g with w = 0: the unguided branch is then exactly the plain step.
    return jax.lax.cond(w_i != 0, guided, unguided, z_t)
