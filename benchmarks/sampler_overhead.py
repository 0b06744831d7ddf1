r"""Why a guided step costs more inside the sampler than alone, one construct at a time.

Times the same guided step (LTG, the shipped defaults) built seven ways, per step:
  step_const      the one-step function, w a trace-time constant (XLA drops the lax.cond)
  step_cond       the one-step function, w a runtime scalar (the lax.cond stays)
  step_runtime_w  the guided step alone, w a runtime scalar, no lax.cond (guided branch only)
  scan_const      lax.scan over S steps, w constant
  scan_cond       lax.scan over S steps, w from the scanned weight table (as the sampler)
  unrolled_const  lax.scan(unroll=True) over S steps, w constant: straight-line code
  sampler         `sampling.make_sampler` (scan_cond + noise, final decode and score)

`--conv lax` builds every model convolution with plain `lax.conv_general_dilated` instead of
`ltg_jax.models.conv` (the state before its explicit input-gradient VJP), for a before/after.

  .venv/bin/python -m benchmarks.sampler_overhead --setting embedded --batch 8 --steps 10
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from ltg_jax import guidance, predictor, sampling, schedulers
from ltg_jax.models import layers


def use_lax_conv() -> None:
    """Build the models' convolutions with plain lax (autodiff's own input gradient)."""
    layers.conv_general_dilated = jax.lax.conv_general_dilated
    predictor.conv_general_dilated = jax.lax.conv_general_dilated


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="embedded", choices=common.SETTINGS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variant", default="z0", choices=("z0", "unet"))
    p.add_argument("--budget_s", type=float, default=10.0)
    p.add_argument("--conv", default="ours", choices=("ours", "lax"))
    a = p.parse_args()
    if a.conv == "lax":
        use_lax_conv()
    setup = common.load_setup(a.setting)
    config = common.sampler_config(setup, a.variant, a.steps)
    schedule = schedulers.make_schedule(dict(config.scheduler), a.steps, config.solver)
    models_ = setup.models
    w = float(config.guidance.w)

    def one(params, z, cond, keys, i, w_i):
        t = schedule.timesteps[i]
        model_fn = sampling._model_fn(models_, config.cfg_scale, params, t, cond)

        def signal_of_x0(x0):
            return models_.signal_fn(params, models_.decode_fn(params, x0), cond)

        z, _, _ = guidance.denoise_step(
            model_fn, signal_of_x0, schedule, i, z, w_i, keys, config.guidance, 0.0, ()
        )
        return z

    def guided_only(params, z, cond, keys, i, w_i):
        # The guided branch of guidance.denoise_step, called directly: no lax.cond.
        t = schedule.timesteps[i]
        model_fn = sampling._model_fn(models_, config.cfg_scale, params, t, cond)
        alpha_t, _ = schedulers.step_alphas(schedule, i)

        def eps_fn(z):
            out = model_fn(z)
            return schedulers.predict_x0_eps(schedule.prediction_type, out, z, alpha_t)[1]

        def signal_of_x0(x0):
            return models_.signal_fn(params, models_.decode_fn(params, x0), cond)

        g = config.guidance
        eps_hat, _ = guidance.longtail_guidance(
            eps_fn, signal_of_x0, z, alpha_t, w_i, grad_through=g.grad_through,
            normalise=g.normalise,
        )  # fmt: skip
        x0 = schedulers.tweedie_x0(z, eps_hat, alpha_t)
        return schedulers.solver_step(schedule, x0, eps_hat, i, z, ())[0]

    def scan(params, z, cond, keys, w_table, unroll=1):
        def body(z, xs):
            i, w_i = xs
            return one(params, z, cond, keys, i, w_i), None

        return jax.lax.scan(body, z, (jnp.arange(a.steps), w_table), unroll=unroll)[0]

    params, z, cond, keys, i = common.step_inputs(setup, a.batch)
    w_table = jnp.full((a.steps,), w, jnp.float32)
    fns = {
        "step_const": jax.jit(lambda p, z, c, k, i: one(p, z, c, k, i, w)),
        "step_cond": jax.jit(one),
        "step_runtime_w": jax.jit(guided_only),
        "scan_const": jax.jit(lambda p, z, c, k: scan(p, z, c, k, np.full(a.steps, w))),
        "scan_cond": jax.jit(scan),
        "unrolled_const": jax.jit(
            lambda p, z, c, k: scan(p, z, c, k, np.full(a.steps, w), unroll=True)
        ),
    }
    args = {
        "step_const": (params, z, cond, keys, i),
        "step_cond": (params, z, cond, keys, i, jnp.float32(w)),
        "step_runtime_w": (params, z, cond, keys, i, jnp.float32(w)),
        "scan_const": (params, z, cond, keys),
        "scan_cond": (params, z, cond, keys, w_table),
        "unrolled_const": (params, z, cond, keys),
    }
    per_step = {k: (1 if k.startswith("step") else a.steps) for k in fns}
    compiled, compile_s = {}, {}
    for k in fns:
        compiled[k], compile_s[k] = common.compile_timed(fns[k], *args[k])
    sampler = sampling.make_sampler(config, models_)
    idx, rng = np.arange(a.batch, dtype=np.int32), jax.random.key(0)
    np_cond = common.make_cond(setup, a.batch)
    common.block(sampler(params, idx, np_cond, rng, 1.0))
    calls = {k: (lambda k=k: compiled[k](*args[k])) for k in compiled}
    calls["sampler"] = lambda: sampler(params, idx, np_cond, rng, 1.0)
    per_step["sampler"] = a.steps
    times = common.interleaved_times(calls, min_reps=3, budget_s=a.budget_s)
    rows = []
    for k, t in times.items():
        ms = 1e3 * common.median(t) / per_step[k]
        flops = common.cost(compiled[k])["flops"] / 1e9 / per_step[k] if k in compiled else None
        gf = "" if flops is None else f"{flops:.3g}"
        cs = f"{compile_s[k]:.1f}" if k in compile_s else ""
        rows.append([k, a.batch, f"{ms:.1f}", gf, cs])
    header = [f"construct (conv: {a.conv})", "batch", "ms per step", "GFLOP per step*", "compile s"]
    print(common.markdown_table(header, rows))
    print("* XLA's cost analysis counts a while-loop body once: scan GFLOPs are divided by S")


if __name__ == "__main__":
    main()
