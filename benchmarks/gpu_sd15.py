r"""One GPU, Stable Diffusion 1.5 shapes (512², bf16), random weights: what LTG costs there.

Reports (JSON lines + markdown tables):
  1. the LTG sampler (grad_through z0, CFG 3, w 2): first-call time (trace + compile) and
     images/s of unguided (w_scale=0, same program) vs LTG, at --batch, --steps;
  2. the same for grad_through=unet (one more compile) if the time budget allows;
  3. the largest batch whose guided step fits in the device memory, remat none vs all:
     XLA memory analysis of the one-step function at two batches, a linear fit, then a real
     run of one step at the predicted batch (if the budget allows) to show that it fits.
Parts that would overrun --budget_s are skipped and reported as skipped.

  bash benchmarks/gpu.sh                       # on the GPU machine, < 8 minutes
  python -m benchmarks.gpu_sd15 --shapes tiny   # CPU smoke test of the same code, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from ltg_jax import diffusion, models, sampling

SD15 = dict(
    latent=64,
    unet_channels=(320, 640, 1280, 1280),
    vae_channels=(128, 256, 512, 512),
    heads=8,
    context_dim=768,
    layers_per_block=2,
    groups=32,
)
TINY = dict(latent=8, unet_channels=(32, 64, 64), vae_channels=(16, 32, 64, 64), heads=4)
DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


class Clock:
    """Seconds since the start, against a budget."""

    def __init__(self, budget_s: float):
        self.start, self.budget_s = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def build(shape: dict, dtype, remat: str, params=None) -> common.Setup:
    """SD-shaped setup with random weights (params reused across remat policies)."""
    pipe = common.build_tiny_sd_pipeline(0, dtype=dtype, remat=remat, params=params, **shape)
    return common.setup_from_pipeline("sd15" if shape is SD15 else "tiny", pipe)


def with_tiny_decoder(setup: common.Setup, dtype) -> common.Setup:
    """The setup with guidance through a TAESD-sized tiny decoder (random weights)."""
    tiny = models.vae_tiny_from_config({}, dtype=dtype)
    base = diffusion.with_tiny_decoder(diffusion.conditional_models(setup.pipe), tiny, 1.0)
    signal = diffusion.predictor_signal(setup.bundle, common.SIGNAL)
    tiny_params = models.init_params(tiny, jax.random.key(3))
    params = {**setup.params, "diffusion": {**setup.params["diffusion"], "tiny_vae": tiny_params}}
    return dataclasses.replace(
        setup, models=diffusion.with_signal(base, signal), params=params, setting="tiny decoder"
    )


def sampler_throughput(setup, variant, batch, steps, reps, out) -> dict:
    """First call (compile) and images/s of unguided vs LTG from one compiled sampler."""
    sampler = sampling.make_sampler(common.sampler_config(setup, variant, steps), setup.models)
    params = jax.device_put(setup.params)
    idx, cond = np.arange(batch, dtype=np.int32), common.make_cond(setup, batch)
    rng = jax.random.key(0)
    t0 = time.perf_counter()
    common.block(sampler(params, idx, cond, rng, 1.0))
    first = time.perf_counter() - t0
    fns = {
        "unguided": lambda: sampler(params, idx, cond, rng, 0.0),
        f"ltg_{variant}": lambda: sampler(params, idx, cond, rng, 1.0),
    }
    times = common.interleaved_times(fns, min_reps=reps, max_reps=reps, budget_s=0)
    med = {k: common.median(v) for k, v in times.items()}
    rec = {
        "bench": "gpu_sampler",
        "variant": variant + (" tiny" if setup.setting == "tiny decoder" else ""),
        "batch": batch,
        "steps": steps,
        "first_call_s": first,
        "loop_s": med,
        "images_per_s": {k: batch / v for k, v in med.items()},
        "ltg_over_unguided_time": med[f"ltg_{variant}"] / med["unguided"],
        "cache_size": sampler.jitted._cache_size(),
    }
    common.write_jsonl(out, rec)
    return rec


def step_bytes(setup, variant: str, batch: int) -> tuple[int, float]:
    """(temp + output bytes of the compiled guided step at batch, compile seconds)."""
    step = common.make_step(setup, variant)
    compiled, seconds = common.compile_timed(step, *common.step_inputs(setup, batch))
    m = common.memory(compiled)
    return m["temp"] + m["output"], seconds


def largest_batch(setup, remat, variant, b1, limit, clock, verify_s, out) -> dict:
    """Largest batch of one guided step that fits: a linear fit of XLA's memory analysis at
    b1 and 2·b1, checked by compiling at the prediction (and scaled down once if it does not
    fit), then one real step at that batch, budget allowing."""
    params_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(setup.params))
    room = 0.92 * limit - params_bytes  # 8% margin for the allocator's fragmentation
    m1, c1 = step_bytes(setup, variant, b1)
    m2, c2 = step_bytes(setup, variant, 2 * b1)
    per_sample = max((m2 - m1) / b1, 1.0)
    fixed = m1 - per_sample * b1
    predicted = max(int((room - fixed) // per_sample), 0)
    rec = {
        "bench": "gpu_largest_batch",
        "remat": remat,
        "variant": variant,
        "bytes_limit_gib": limit / 2**30,
        "params_gib": params_bytes / 2**30,
        "per_sample_mib": per_sample / 2**20,
        "fixed_mib": fixed / 2**20,
        "predicted_max_batch": predicted,
        "compile_s": [c1, c2],
        "checked": [],
        "largest_batch": None,
        "verified": None,
    }
    batch = predicted
    for _ in range(2):  # compile at the prediction; once more, scaled, if XLA says no
        if batch <= 0 or clock.left() < verify_s:
            break
        m, c = step_bytes(setup, variant, batch)
        rec["checked"].append({"batch": batch, "gib": m / 2**30, "compile_s": c})
        if m <= room:
            rec["largest_batch"] = batch
            break
        batch = int(batch * room / m)
    if rec["largest_batch"] and clock.left() > verify_s:
        step = common.make_step(setup, variant)
        try:
            common.block(step(*common.step_inputs(setup, rec["largest_batch"])))
            rec["verified"] = "ran"
        except Exception as e:  # out of memory at run time: report it, do not crash
            rec["verified"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    else:
        rec["verified"] = "skipped (time budget)"
    common.write_jsonl(out, rec)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="sd15", choices=("sd15", "tiny"))
    p.add_argument("--dtype", default="bfloat16", choices=tuple(DTYPES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--fit_batch", type=int, default=4, help="first batch of the memory fit")
    p.add_argument("--fit_variant", default="z0", choices=("z0", "unet"))
    p.add_argument("--budget_s", type=float, default=420.0)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    clock = Clock(a.budget_s)
    dev = jax.devices()[0]
    if a.shapes == "sd15" and dev.platform != "gpu":
        raise SystemExit(f"--shapes sd15 wants a GPU, found {dev}; use --shapes tiny on CPU")
    common.write_jsonl(a.out, {"bench": "machine", **common.machine(), "args": vars(a)})
    shape, dtype = (SD15 if a.shapes == "sd15" else TINY), DTYPES[a.dtype]

    setup = build(shape, dtype, "none")
    common.write_jsonl(a.out, {"bench": "built", "elapsed_s": clock.elapsed()})
    results = [sampler_throughput(setup, "z0", a.batch, a.steps, a.reps, a.out)]
    # The same with the guidance gradient through a TAESD-sized tiny decoder.
    tiny = with_tiny_decoder(setup, dtype)
    results.append(sampler_throughput(tiny, "z0", a.batch, a.steps, a.reps, a.out))
    # The unet variant costs one more compile of the biggest program: only with time to spare.
    if clock.left() > 0.6 * a.budget_s:
        results.append(sampler_throughput(setup, "unet", a.batch, a.steps, a.reps, a.out))
    else:
        common.write_jsonl(a.out, {"bench": "gpu_sampler", "variant": "unet", "skipped": True})

    stats = dev.memory_stats() or {}
    limit = int(stats.get("bytes_limit", 0)) or 16 * 2**30  # CPU has no limit: nominal 16 GiB
    fits = []
    diffusion_params = (setup.pipe.unet_params, setup.pipe.vae_params)
    for remat in ("none", "all"):
        if clock.left() < 60:
            common.write_jsonl(a.out, {"bench": "gpu_largest_batch", "remat": remat, "skipped": 1})
            continue
        s = setup if remat == "none" else build(shape, dtype, remat, diffusion_params)
        fits.append(largest_batch(s, remat, a.fit_variant, a.fit_batch, limit, clock, 60, a.out))

    rows = [
        [
            r["variant"],
            r["batch"],
            r["steps"],
            f"{r['first_call_s']:.1f}",
            f"{r['images_per_s']['unguided']:.3g}",
            f"{r['images_per_s']['ltg_' + r['variant'].split()[0]]:.3g}",
            f"{r['ltg_over_unguided_time']:.2f}",
            r["cache_size"],
        ]
        for r in results
    ]
    header = ["grad_through", "batch", "steps", "first call s (compile)", "unguided img/s",
              "LTG img/s", "LTG/unguided time", "jit cache size"]  # fmt: skip
    print(common.markdown_table(header, rows))
    rows = [
        [
            r["remat"],
            r["variant"],
            f"{r['per_sample_mib']:.0f}",
            f"{r['params_gib']:.2f}",
            f"{r['bytes_limit_gib']:.1f}",
            r["predicted_max_batch"],
            r["largest_batch"],
            r["verified"],
        ]
        for r in fits
    ]
    header = ["remat", "grad_through", "MiB per sample", "params GiB", "limit GiB",
              "linear-fit batch", "largest batch (XLA-checked)", "one step at it"]  # fmt: skip
    print(common.markdown_table(header, rows))
    print(f"total {clock.elapsed():.0f} s")


if __name__ == "__main__":
    main()
