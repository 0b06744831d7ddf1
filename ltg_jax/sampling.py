"""The jitted, device-parallel Longtail Guidance sampler (DDIM or DPM-Solver++(2M)).

`make_sampler(config, models)` returns ONE `jax.jit` whose per-device program is a
`jax.shard_map` over the 1-D `data` mesh (params and key replicated, batch sharded) running a
`lax.scan` over the timesteps (CFG, guidance, solver step) and the final decode and score.
Sample i draws all of its noise from `fold_in(rng, i)` with i its global index, so images
do not depend on the device count or on how samples are split into batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from ltg_jax import guidance, parallel, schedulers

Params = Any
Cond = Any  # pytree of arrays with a leading batch axis [B, ...]


class SamplerModels(NamedTuple):
    """The pure callables the sampler is built from (every one gets the full params pytree).

    eps_fn(params, z [B,h,w,c] f32, t [B] int32, cond) -> model output [B,h,w,c] (ε or v, as
        the scheduler config's prediction_type says).
    decode_fn(params, z [B,h,w,c]) -> images [B,H,W,C] in [-1, 1]. It receives diffusion-space
        latents and applies 1/s_vae itself (x = D(z / s_vae)).
    signal_fn(params, images [B,H,W,C], cond) -> [B], higher = more longtail; None: no
        guidance and the returned signals are NaN.
    null_cond(cond) -> cond of the unconditional CFG branch (same structure); None: no CFG.
    latent_shape: (h, w, c) of one latent.
    guide_decode_fn(params, z) -> images: the decoder guidance differentiates (e.g. a tiny
        distilled one); None: decode_fn. The returned images always come from decode_fn.
    """

    eps_fn: Callable[[Params, jax.Array, jax.Array, Cond], jax.Array]
    decode_fn: Callable[[Params, jax.Array], jax.Array]
    signal_fn: Callable[[Params, jax.Array, Cond], jax.Array] | None
    null_cond: Callable[[Cond], Cond] | None
    latent_shape: tuple[int, int, int]
    guide_decode_fn: Callable[[Params, jax.Array], jax.Array] | None = None


class SampleOutput(NamedTuple):
    """What the sampler returns; every field is sharded over `data` on its batch axis."""

    images: jax.Array  # [B, H, W, C] decoded final latents, in [-1, 1]
    signals: jax.Array  # [B] signal of the final images (NaN without signal_fn)
    latents: jax.Array  # [B, h, w, c] final latents z_0 (diffusion space)
    signal_trace: jax.Array  # [B, S] signal of x̂0 at each guided step, NaN at unguided steps


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static sampler settings (one compile per config, batch and resolution)."""

    scheduler: tuple[tuple[str, Any], ...]  # diffusers scheduler_config.json items
    num_steps: int = 50
    solver: str = "ddim"  # ddim | dpmsolver++ (2M; η is then unused)
    eta: float = 0.0  # DDIM η: 0 deterministic, 1 DDPM-like
    cfg_scale: float = 1.0  # γ; 1 skips the unconditional branch
    guidance: guidance.GuidanceConfig = dataclasses.field(default_factory=guidance.GuidanceConfig)

    def __post_init__(self):
        """Reject bad settings where they enter."""
        if self.solver not in schedulers.SOLVERS:
            raise ValueError(f"solver={self.solver!r}; use one of {schedulers.SOLVERS}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ml_collections.ConfigDict):
        """Build from a ConfigDict/dict with the fields of this class (guidance as a dict)."""
        cfg = dict(config.items())
        unknown = sorted(set(cfg) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown sampler config keys {unknown}")
        if "scheduler" not in cfg:
            raise ValueError("config.scheduler is required: a diffusers scheduler_config dict")
        sched = cfg.pop("scheduler")
        sched = sched.to_dict() if hasattr(sched, "to_dict") else dict(sched)
        g = guidance.GuidanceConfig.from_config(cfg.pop("guidance", None))
        return cls(scheduler=tuple(sorted(sched.items())), guidance=g, **cfg)


# The one set of defaults shared by LTGPipeline and the command line (configs/ltg.py).
DEFAULT_NUM_STEPS = 25
DEFAULT_SOLVER = "ddim"
DEFAULT_ETA = 0.0
DEFAULT_CFG_SCALE = {"class": 3.0, "text": 7.5}  # our class models; Stable Diffusion (diffusers)
DEFAULT_LTG_SCALE = 2.0  # w; 0 = unguided
DEFAULT_SIGNAL = "epistemic"
DEFAULT_GRAD_THROUGH = "z0"
DEFAULT_NORMALISE = "unit"


def default_config(kind: str = "class") -> ml_collections.ConfigDict:
    """The shared defaults as a ConfigDict (SamplerConfig fields less the folder's `scheduler`).

    `kind` ('class' | 'text') picks the classifier-free guidance scale.
    """
    cfg = ml_collections.ConfigDict()
    cfg.num_steps = DEFAULT_NUM_STEPS
    cfg.solver = DEFAULT_SOLVER
    cfg.eta = DEFAULT_ETA
    cfg.cfg_scale = DEFAULT_CFG_SCALE[kind]
    cfg.guidance = guidance.default_config()
    cfg.guidance.w = DEFAULT_LTG_SCALE
    cfg.guidance.grad_through = DEFAULT_GRAD_THROUGH
    cfg.guidance.normalise = DEFAULT_NORMALISE
    return cfg


def _fold(keys: jax.Array, data: jax.Array | int) -> jax.Array:
    """fold_in the same data into each of a batch of typed keys [B]."""
    return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


def _concat_trees(a: Any, b: Any) -> Any:
    """Concatenate two pytrees of batched arrays along the batch axis."""
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y], axis=0), a, b)


def _model_fn(
    models: SamplerModels, cfg_scale: float, params: Params, t: jax.Array, cond: Cond
) -> Callable[[jax.Array], jax.Array]:
    """z_t -> CFG-combined model output at timestep t, with both branches in one call."""
    # Model outputs are upcast to the latents' dtype (f32) before CFG and the solver.
    if models.null_cond is None or cfg_scale == 1.0:

        def fn(z):
            t_b = jnp.full(z.shape[:1], t, jnp.int32)
            return models.eps_fn(params, z, t_b, cond).astype(z.dtype)

        return fn
    both_cond = _concat_trees(models.null_cond(cond), cond)

    def fn(z):
        b = z.shape[0]
        t_2b = jnp.full((2 * b,), t, jnp.int32)
        out = models.eps_fn(params, jnp.concatenate([z, z]), t_2b, both_cond).astype(z.dtype)
        return guidance.cfg_combine(out[:b], out[b:], cfg_scale)

    return fn


def sample_keys(rng: jax.Array, sample_indices: jax.Array) -> jax.Array:
    """Typed keys [B]: everything sample i draws comes from fold_in(rng, i), whatever the batch."""
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(sample_indices)


def initial_latents(
    rng: jax.Array, sample_indices: jax.Array, latent_shape: tuple[int, int, int]
) -> jax.Array:
    """z_T [B,h,w,c] of the given global samples (init_noise_sigma = 1, as DDIM and DPM++)."""
    keys = _fold(sample_keys(rng, sample_indices), 0)
    return guidance.step_noise(keys, 0, tuple(latent_shape))


def sample_local(
    config: SamplerConfig,
    models: SamplerModels,
    params: Params,
    sample_indices: jax.Array,
    cond: Cond,
    rng: jax.Array,
    w_scale: jax.Array | float = 1.0,
) -> SampleOutput:
    """The whole sampling loop on one device's batch (the body of the shard_map)."""
    schedule = schedulers.make_schedule(dict(config.scheduler), config.num_steps, config.solver)
    weights = guidance.guidance_weights(config.guidance, config.num_steps)
    guided = models.signal_fn is not None and bool(weights.any())

    keys = sample_keys(rng, sample_indices)
    step_keys = _fold(keys, 1)
    z = initial_latents(rng, sample_indices, models.latent_shape)

    guide_decode = models.guide_decode_fn or models.decode_fn

    def signal_of_x0(x0):
        return models.signal_fn(params, guide_decode(params, x0), cond)

    def body(carry, xs):
        z, state = carry
        i, t, w_i = xs
        keys_i = _fold(step_keys, i)
        model_fn = _model_fn(models, config.cfg_scale, params, t, cond)
        z, signal, state = guidance.denoise_step(
            model_fn,
            signal_of_x0 if guided else None,
            schedule,
            i,
            z,
            w_i,
            keys_i,
            config.guidance,
            config.eta,
            state,
        )
        return (z, state), signal

    xs = (jnp.arange(config.num_steps), schedule.timesteps, w_scale * jnp.asarray(weights))
    (z, _), trace = jax.lax.scan(body, (z, schedulers.init_solver_state(schedule, z)), xs)
    images = models.decode_fn(params, z)
    if models.signal_fn is None:
        signals = guidance.nan_per_sample(z)
    else:
        signals = models.signal_fn(params, images, cond).astype(jnp.float32)
    return SampleOutput(images, signals, z, trace.T)


def one_step(
    config: SamplerConfig, models: SamplerModels, guided: bool
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """`step(params, z [B,h,w,c], cond, keys [B], i) -> (z_prev, signal)`: one sampler step.

    The scan body's work (CFG model call, `guidance.denoise_step`) with the weight a
    trace-time constant (config.guidance.w when `guided`, else 0), so XLA's cost analysis of
    the compiled step counts exactly one branch: what a step of a run costs.
    """
    schedule = schedulers.make_schedule(dict(config.scheduler), config.num_steps, config.solver)
    guide_decode = models.guide_decode_fn or models.decode_fn
    w = config.guidance.w if guided else 0.0

    def step(params, z, cond, keys, i):
        model_fn = _model_fn(models, config.cfg_scale, params, schedule.timesteps[i], cond)
        signal_of_x0 = None
        if guided:

            def signal_of_x0(x0):
                return models.signal_fn(params, guide_decode(params, x0), cond)

        z, signal, _ = guidance.denoise_step(
            model_fn, signal_of_x0, schedule, i, z, w, keys, config.guidance, config.eta, ()
        )
        return z, signal

    return step


def step_flops(
    config: SamplerConfig, models: SamplerModels, params: Params, cond: Cond, batch: int
) -> dict[str, float]:
    """XLA's FLOPs of one guided and one unguided step at `batch` (compiled, never run).

    `cond` holds `batch` rows of conditioning.
    """
    sds = jax.ShapeDtypeStruct
    z = sds((batch, *models.latent_shape), jnp.float32)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
    out = {}
    for name, guided in (("guided", True), ("unguided", False)):
        step = jax.jit(one_step(config, models, guided))
        analysis = step.lower(params, z, cond, keys, sds((), jnp.int32)).compile().cost_analysis()
        out[name] = float(analysis["flops"])
    return out


def run_flops(step_flops: Mapping[str, float], config: SamplerConfig) -> float:
    """FLOPs of a whole run from one step's: {'guided', 'unguided'} (per step, same batch).

    Guided steps are the window/stride's, each repeated `recurrence` times.
    """
    weights = guidance.guidance_weights(config.guidance, config.num_steps)
    guided = int(np.count_nonzero(weights))
    repeats = guided * config.guidance.recurrence
    return repeats * step_flops["guided"] + (config.num_steps - guided) * step_flops["unguided"]


def make_sampler(
    config: SamplerConfig | Mapping[str, Any] | ml_collections.ConfigDict,
    models: SamplerModels,
    mesh: Mesh | None = None,
) -> Callable[[Params, jax.Array, Cond, jax.Array], SampleOutput]:
    """Jitted `sample(params, sample_indices [B], cond [B, ...], rng, w_scale=1.0) -> SampleOutput`.

    B must be divisible by the mesh size; `rng` is a typed key (`jax.random.key(seed)`);
    `w_scale` (runtime, never retraces) multiplies the guidance weight table: 0.0 gives
    exactly the unguided samples from the same compiled program. `sampler.jitted` is the
    underlying jitted function (all five arguments positional, w_scale an f32 scalar). Inputs may be
    host arrays (single process) or global arrays (see parallel.py).
    """
    if not isinstance(config, SamplerConfig):
        config = SamplerConfig.from_config(config)
    mesh = parallel.data_mesh() if mesh is None else mesh
    data = PartitionSpec(parallel.DATA_AXIS)

    def per_device(params, sample_indices, cond, rng, w_scale):
        return sample_local(config, models, params, sample_indices, cond, rng, w_scale)

    sharded = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(PartitionSpec(), data, data, PartitionSpec(), PartitionSpec()),
        out_specs=data,
    )

    def sample(params, sample_indices, cond, rng, w_scale):
        n = mesh.shape[parallel.DATA_AXIS]
        if sample_indices.ndim != 1 or sample_indices.shape[0] % n:
            raise ValueError(
                f"sample_indices must be [B] with B divisible by the {n} devices of the mesh; "
                f"got shape {sample_indices.shape}"
            )
        return sharded(params, sample_indices.astype(jnp.int32), cond, rng, w_scale)

    rep, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    jitted = jax.jit(sample, in_shardings=(rep, batch, batch, rep, rep), out_shardings=batch)

    def sampler(params, sample_indices, cond, rng, w_scale=1.0):
        # A strongly typed f32 scalar whatever the caller passes: one trace for all w_scale.
        return jitted(params, sample_indices, cond, rng, jnp.asarray(w_scale, jnp.float32))

    sampler.jitted = jitted  # for .lower(...) and ._cache_size() (one compile per shape)
    sampler.mesh = mesh
    sampler.config, sampler.models = config, models  # for cost accounting (step_flops)
    return sampler
