r"""bfloat16 vs float32 compute on CPU: the same guided step in both dtypes, timed round-robin.

For each setting and batch it loads the random-weight folder twice (`load_pipeline(dtype=)`:
bf16 compute, f32 params and scheduler maths), compiles the unguided and the LTG z0 step of
each, and times the four in one process. Ratios f32/bf16 above 1 mean bf16 is faster.

  .venv/bin/python -m benchmarks.dtype_step --settings embedded,tiny_sd --batches 8,64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp

from benchmarks import common

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}
VARIANTS = ("unguided", "z0")


def run(setting: str, batches: list[int], budget_s: float) -> list[dict]:
    """Per batch: median ms per step of each (dtype, variant) and the f32/bf16 ratios."""
    setups = {name: common.load_setup(setting, dtype=dtype) for name, dtype in DTYPES.items()}
    steps = {(d, v): common.make_step(setups[d], v) for d in DTYPES for v in VARIANTS}
    records = []
    for batch in batches:
        calls = {}
        for (d, v), step in steps.items():
            args = common.step_inputs(setups[d], batch)
            compiled, _ = common.compile_timed(step, *args)
            calls[f"{d}_{v}"] = lambda c=compiled, a=args: c(*a)
        times = common.interleaved_times(calls, budget_s=budget_s)
        ms = {k: 1e3 * common.median(t) for k, t in times.items()}
        records.append(
            {
                "bench": "dtype_step",
                "setting": setting,
                "batch": batch,
                "ms": ms,
                "f32_over_bf16": {v: ms[f"f32_{v}"] / ms[f"bf16_{v}"] for v in VARIANTS},
            }
        )
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="embedded,tiny_sd")
    p.add_argument("--batches", default="8,64")
    p.add_argument("--budget_s", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    a = p.parse_args()
    common.write_jsonl(a.out, {"bench": "machine", **common.machine()})
    rows = []
    for setting in a.settings.split(","):
        for rec in run(setting, [int(b) for b in a.batches.split(",")], a.budget_s):
            common.write_jsonl(a.out, rec)
            ms, ratio = rec["ms"], rec["f32_over_bf16"]
            rows.append(
                [setting, rec["batch"]]
                + [f"{ms[f'{d}_{v}']:.1f}" for v in VARIANTS for d in DTYPES]
                + [f"{ratio[v]:.2f}" for v in VARIANTS]
            )
    header = [f"{v} {d} ms" for v in VARIANTS for d in DTYPES]
    header += [f"f32/bf16 {v}" for v in VARIANTS]
    print(common.markdown_table(["setting", "batch", *header], rows))


if __name__ == "__main__":
    main()
