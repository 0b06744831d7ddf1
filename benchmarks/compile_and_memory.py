r"""Compile cost of the sampler (and proof of no recompile) and memory of one guided step.

Compile: the first call of the jitted 25-step LTG sampler (trace + compile + run) against
its second call (run only); then calls with a new batch of the same shape and other w_scale
values must leave `sampler.jitted._cache_size()` at 1; a new batch size compiles once more.

Memory: XLA's memory analysis (temp = activations kept for the backward pass and scratch) of
the compiled one-step function (`common.make_step`) for remat none / decoder / all of the
VAE decoder and the UNet (`weights.load_pipeline(remat=...)`), optionally with the peak RSS
of a fresh process that runs the step once (`--rss`).

  nice -n 0 .venv/bin/python -m benchmarks.compile_and_memory --settings embedded,tiny_sd \
      --compile_batch 8 --memory_batch 64 --out /tmp/ltg_bench/compile_memory.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from ltg_jax import sampling

REMATS = ("none", "decoder", "all")


def compile_cost(setting: str, batch: int, num_steps: int, out: Path | None) -> dict:
    """First-call vs steady time of the sampler, and its jit cache size after more batches."""
    setup = common.load_setup(setting)
    sampler = sampling.make_sampler(common.sampler_config(setup, "z0", num_steps), setup.models)
    params = jax.device_put(setup.params)
    rng = jax.random.key(0)

    def call(first_index, w_scale=1.0, b=batch):
        idx = np.arange(first_index, first_index + b, dtype=np.int32)
        cond = common.make_cond(setup, b, seed=first_index)
        return common.block(sampler(params, idx, cond, rng, w_scale))

    t0 = time.perf_counter()
    call(0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    call(batch)  # a second batch: new indices and conditioning, same shapes
    second = time.perf_counter() - t0
    call(2 * batch, w_scale=0.5)
    call(3 * batch, w_scale=0.0)  # the unguided baseline from the same program
    cache_same_shape = sampler.jitted._cache_size()
    call(0, b=2 * batch)  # a new batch size is a new shape: one more compile, by design
    rec = {
        "bench": "compile",
        "setting": setting,
        "batch": batch,
        "num_steps": num_steps,
        "first_call_s": first,
        "second_call_s": second,
        "compile_s_estimate": first - second,
        "cache_size_after_4_calls_same_shape": cache_same_shape,
        "cache_size_after_new_batch_size": sampler.jitted._cache_size(),
    }
    common.write_jsonl(out, rec)
    return rec


def step_memory(setting: str, remat: str, variant: str, batch: int) -> dict:
    """XLA memory analysis (bytes) and compile time of the one-step function."""
    setup = common.load_setup(setting, remat=remat)
    step = common.make_step(setup, variant)
    compiled, compile_s = common.compile_timed(step, *common.step_inputs(setup, batch))
    return {"memory": common.memory(compiled), "compile_s": compile_s, "compiled": compiled}


def rss_of_step(setting: str, remat: str, variant: str, batch: int) -> tuple[float, float]:
    """Peak RSS (MiB) of a fresh process before and after it compiles and runs the step once."""
    code = (
        "import json, jax; from benchmarks import common;"
        f"s = common.load_setup({setting!r}, remat={remat!r});"
        f"a = common.step_inputs(s, {batch}); r0 = common.peak_rss_mib();"
        f"jax.block_until_ready(common.make_step(s, {variant!r})(*a));"
        "print(json.dumps([r0, common.peak_rss_mib()]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = json.loads(res.stdout.strip().splitlines()[-1])
    return before, after


def memory_table(setting: str, batch: int, rss: bool, out: Path | None) -> list[dict]:
    """Memory of the guided steps for each remat policy (unguided once, as the floor)."""
    records = []
    plan = [("none", "unguided")] + [(r, v) for v in ("z0", "unet") for r in REMATS]
    for remat, variant in plan:
        m = step_memory(setting, remat, variant, batch)
        rec = {
            "bench": "memory",
            "setting": setting,
            "batch": batch,
            "remat": remat,
            "variant": variant,
            "temp_mib": m["memory"]["temp"] / 2**20,
            "argument_mib": m["memory"]["argument"] / 2**20,
            "output_mib": m["memory"]["output"] / 2**20,
            "compile_s": m["compile_s"],
            "gflops": common.cost(m["compiled"])["flops"] / 1e9,
        }
        if rss:
            rec["rss_before_step_mib"], rec["peak_rss_mib"] = rss_of_step(
                setting, remat, variant, batch
            )
        common.write_jsonl(out, rec)
        records.append(rec)
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="embedded,tiny_sd")
    p.add_argument("--compile_batch", type=int, default=8)
    p.add_argument("--num_steps", type=int, default=25)
    p.add_argument("--memory_batch", type=int, default=64)
    p.add_argument("--rss", action="store_true", help="also peak RSS of a fresh process")
    p.add_argument("--skip", default="", help="compile | memory")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    common.write_jsonl(a.out, {"bench": "machine", **common.machine()})
    jnp.zeros(()).block_until_ready()
    compile_recs, mem_recs = [], []
    for setting in a.settings.split(","):
        common.ensure_folder(setting)
        if "compile" not in a.skip:
            compile_recs.append(compile_cost(setting, a.compile_batch, a.num_steps, a.out))
        if "memory" not in a.skip:
            mem_recs += memory_table(setting, a.memory_batch, a.rss, a.out)
    if compile_recs:
        rows = [
            [
                r["setting"],
                r["batch"],
                r["num_steps"],
                f"{r['first_call_s']:.1f}",
                f"{r['second_call_s']:.2f}",
                f"{r['compile_s_estimate']:.1f}",
                r["cache_size_after_4_calls_same_shape"],
                r["cache_size_after_new_batch_size"],
            ]
            for r in compile_recs
        ]
        header = ["setting", "batch", "steps", "1st call s", "2nd call s", "compile s",
                  "cache size (4 calls, same shape)", "cache size (+ new batch size)"]  # fmt: skip
        print(common.markdown_table(header, rows))
    if mem_recs:
        nan = float("nan")
        rows = [
            [
                r["setting"],
                r["batch"],
                r["variant"],
                r["remat"],
                f"{r['temp_mib']:.1f}",
                f"{r['argument_mib']:.1f}",
                f"{r['gflops']:.3g}",
                f"{r.get('peak_rss_mib', float('nan')):.0f}",
                f"{r.get('peak_rss_mib', nan) - r.get('rss_before_step_mib', nan):.0f}",
            ]
            for r in mem_recs
        ]
        header = ["setting", "batch", "variant", "remat", "XLA temp MiB", "args MiB", "GFLOP",
                  "peak RSS MiB", "RSS added by the step MiB"]  # fmt: skip
        print(common.markdown_table(header, rows))


if __name__ == "__main__":
    main()
