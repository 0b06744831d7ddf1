"""The jitted sampler: determinism across batches and devices, one trace, w = 0 identity."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_diffusion as toy

from ltg_jax import guidance, parallel, sampling, schedulers

W = 1.5
# 4 steps; window [0.25, 1) with stride 2 guides steps 1 and 3 only.
GUIDED = toy.config(4, w=W, start=0.25, stride=2, normalise="unit")


class Counting:
    """Wraps a function and counts Python calls, i.e. how often the sampler is traced."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


@pytest.fixture(scope="module")
def setup():
    params = toy.init_params()
    decode = Counting(toy.decode_fn)
    models = toy.models()._replace(decode_fn=decode)
    guided = sampling.make_sampler(GUIDED, models)
    plain = sampling.make_sampler(toy.config(4), toy.models(with_signal=False))
    idx = jnp.arange(8, dtype=jnp.int32)
    labels = idx % toy.NUM_CLASSES
    out = guided(params, idx, labels, jax.random.key(0))
    return dict(
        params=params, guided=guided, plain=plain, decode=decode, idx=idx, labels=labels, out=out
    )


def test_output_shapes_and_sharding(setup):
    out = setup["out"]
    assert out.images.shape == (8, 16, 16, 1) and out.latents.shape == (8, *toy.LATENT)
    assert out.signals.shape == (8,) and out.signal_trace.shape == (8, 4)
    assert out.images.sharding.spec == jax.sharding.PartitionSpec(parallel.DATA_AXIS)
    assert bool(jnp.all(jnp.abs(out.images) <= 1.0)) and bool(jnp.all(jnp.isfinite(out.signals)))


def test_signal_trace_marks_the_guided_steps(setup):
    guided_steps = ~np.isnan(np.asarray(setup["out"].signal_trace))
    np.testing.assert_array_equal(guided_steps, np.tile([False, True, False, True], (8, 1)))


def test_zero_weight_is_the_unguided_sampler_bit_for_bit(setup):
    s = setup
    off = s["guided"](s["params"], s["idx"], s["labels"], jax.random.key(0), 0.0)
    plain = s["plain"](s["params"], s["idx"], s["labels"], jax.random.key(0))
    np.testing.assert_array_equal(off.latents, plain.latents)
    np.testing.assert_array_equal(off.images, plain.images)
    assert bool(jnp.all(jnp.isnan(off.signal_trace)))


def test_guidance_increases_the_signal(setup):
    s = setup
    off = s["guided"](s["params"], s["idx"], s["labels"], jax.random.key(0), 0.0)
    on = s["out"]
    assert float(jnp.mean(on.signals)) > float(jnp.mean(off.signals)) + 0.02
    assert float(jnp.mean(on.signals > off.signals)) >= 0.75


def test_one_trace_per_shape(setup):
    s = setup
    traces = s["decode"].calls
    for seed, w in ((1, 0.5), (2, 2.0)):
        s["guided"](s["params"], s["idx"] + 8, (s["labels"] + 1) % 3, jax.random.key(seed), w)
    assert s["decode"].calls == traces
    assert s["guided"].jitted._cache_size() == 1


def test_batch_boundaries_do_not_change_samples(setup):
    s = setup
    halves = [
        s["guided"](s["params"], s["idx"][sl], s["labels"][sl], jax.random.key(0))
        for sl in (slice(0, 4), slice(4, 8))
    ]
    for field in ("images", "latents", "signals"):
        joined = np.concatenate([getattr(h, field) for h in halves])
        np.testing.assert_allclose(joined, getattr(s["out"], field), atol=1e-5, rtol=1e-5)


def test_bad_indices_are_rejected(setup):
    s = setup
    with pytest.raises(ValueError, match="sample_indices must be"):
        s["guided"](s["params"], s["idx"].reshape(2, 4), s["labels"], jax.random.key(0))


def test_config_from_configdict():
    cfg = sampling.default_config()
    cfg.scheduler = toy.SCHEDULER
    cfg.guidance.w = 3.0
    sc = sampling.SamplerConfig.from_config(cfg)
    assert sc.num_steps == sampling.DEFAULT_NUM_STEPS and sc.guidance.w == 3.0
    assert dict(sc.scheduler) == toy.SCHEDULER and sc.guidance.normalise == "unit"
    with pytest.raises(ValueError, match="unknown sampler config keys"):
        sampling.SamplerConfig.from_config({**toy.config(), "steps": 3})


def test_eight_fake_devices_match_one_device():
    """Runs tests/sharded_sampling_check.py with 8 fake CPU devices in its own process."""
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "tests")])
    env.pop("JAX_ENABLE_X64", None)
    script = root / "tests" / "sharded_sampling_check.py"
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout


@pytest.mark.parametrize("solver", ["ddim", "dpmsolver++"])
def test_unguided_sampler_equals_a_python_loop(setup, solver):
    """The scan (CFG, solver state, per-sample keys) against the schedulers used step by step."""
    s = setup
    cfg = {**toy.config(4), "solver": solver}
    out = sampling.make_sampler(cfg, toy.models(with_signal=False))(
        s["params"], s["idx"], s["labels"], jax.random.key(0)
    )
    sched = schedulers.make_schedule(toy.SCHEDULER, 4, solver)
    fold = lambda keys, d: jax.vmap(lambda k: jax.random.fold_in(k, d))(keys)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(s["idx"])
    z = guidance.step_noise(fold(keys, 0), 0, toy.LATENT)
    state = schedulers.init_solver_state(sched, z)
    null = toy.null_cond(s["labels"])
    for i, t in enumerate(np.asarray(sched.timesteps)):
        tt = jnp.full((8,), t)
        out_u = toy.eps_fn(s["params"], z, tt, null)
        out_c = toy.eps_fn(s["params"], z, tt, s["labels"])
        model_out = guidance.cfg_combine(out_u, out_c, cfg["cfg_scale"])
        x0, eps = schedulers.model_output_to_x0_eps(sched, model_out, i, z)
        noise = guidance.step_noise(fold(fold(keys, 1), i), 0, toy.LATENT)
        z, state = schedulers.solver_step(sched, x0, eps, i, z, state, noise, cfg["eta"])
    np.testing.assert_allclose(out.latents, z, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out.images, toy.decode_fn(s["params"], z), atol=1e-5)


def test_guided_dpm_sampler_runs_and_zero_weight_is_unguided(setup):
    s = setup
    cfg = {**GUIDED, "solver": "dpmsolver++", "guidance": {**GUIDED["guidance"], "recurrence": 2}}
    sampler = sampling.make_sampler(cfg, toy.models())
    plain = sampling.make_sampler({**toy.config(4), "solver": "dpmsolver++"}, toy.models(False))
    args = (s["params"], s["idx"], s["labels"], jax.random.key(0))
    on, off, ref = sampler(*args), sampler(*args, 0.0), plain(*args)
    np.testing.assert_array_equal(off.latents, ref.latents)
    assert bool(jnp.all(jnp.isfinite(on.latents))) and float(jnp.mean(on.signals - off.signals)) > 0


def test_parallel_helpers_on_one_process(monkeypatch):
    monkeypatch.delenv(parallel.DISTRIBUTED_ENV, raising=False)
    assert parallel.maybe_initialize_distributed() is False  # not asked: stays single-process
    mesh = parallel.data_mesh()
    assert mesh.axis_names == (parallel.DATA_AXIS,) and mesh.size == jax.device_count()
    assert parallel.is_process_zero() and parallel.process_batch_slice(4) == slice(0, 4)
