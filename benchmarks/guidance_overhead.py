r"""The cost of guidance next to its floor: per-step time of unguided / LTG z0 / LTG unet.

For each setting and batch it compiles the three one-step functions (`common.make_step`),
reads XLA's cost analysis (flops) of each compiled program, then times them round-robin in
the same process, so each measured ratio guided/unguided sits next to its FLOP ratio.

  nice -n 0 .venv/bin/python -m benchmarks.guidance_overhead \
      --settings embedded,tiny_sd --batches 1,8,64 --out /tmp/ltg_bench/overhead.jsonl
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import common


def run(setting: str, batches: list[int], budget_s: float, out: Path | None) -> list[dict]:
    """Records (one per batch) of per-step times and FLOPs of the three variants."""
    setup = common.load_setup(setting)
    steps = {v: common.make_step(setup, v) for v in common.VARIANTS}
    records = []
    for batch in batches:
        args = common.step_inputs(setup, batch)
        compiled, costs, compile_s = {}, {}, {}
        for v, fn in steps.items():
            compiled[v], compile_s[v] = common.compile_timed(fn, *args)
            costs[v] = common.cost(compiled[v])
        fns = {v: (lambda c=c, a=args: c(*a)) for v, c in compiled.items()}
        times = common.interleaved_times(fns, budget_s=budget_s)
        med = {v: common.median(t) for v, t in times.items()}
        rec = {
            "bench": "guidance_overhead",
            "setting": setting,
            "batch": batch,
            "step_s": med,
            "reps": {v: len(t) for v, t in times.items()},
            "min_s": {v: min(t) for v, t in times.items()},
            "gflops": {v: c["flops"] / 1e9 for v, c in costs.items()},
            "gbytes": {v: c["bytes"] / 1e9 for v, c in costs.items()},
            "compile_s": compile_s,
        }
        for v in ("z0", "unet"):
            measured = med[v] / med["unguided"]
            flop = costs[v]["flops"] / costs["unguided"]["flops"]
            rec[f"ratio_{v}"] = {"measured": measured, "flops": flop, "excess": measured / flop}
        common.write_jsonl(out, rec)
        records.append(rec)
    return records


def table(records: list[dict]) -> str:
    """Markdown table of the records."""
    rows = []
    for r in records:
        s = r["step_s"]
        rows.append(
            [
                r["setting"],
                r["batch"],
                f"{1e3 * s['unguided']:.1f}",
                f"{1e3 * s['z0']:.1f}",
                f"{1e3 * s['unet']:.1f}",
                f"{r['ratio_z0']['measured']:.2f} / {r['ratio_z0']['flops']:.2f}",
                f"{r['ratio_unet']['measured']:.2f} / {r['ratio_unet']['flops']:.2f}",
                f"{r['ratio_z0']['excess']:.2f}",
                f"{r['ratio_unet']['excess']:.2f}",
                f"{r['gflops']['unguided']:.3g}",
            ]
        )
    header = [
        "setting",
        "batch",
        "unguided ms",
        "z0 ms",
        "unet ms",
        "z0/ung measured / FLOPs",
        "unet/ung measured / FLOPs",
        "z0 excess",
        "unet excess",
        "unguided GFLOP",
    ]
    return common.markdown_table(header, rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="embedded,tiny_sd")
    p.add_argument("--batches", default="1,8,64")
    p.add_argument("--budget_s", type=float, default=15.0, help="timing seconds per batch")
    p.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    a = p.parse_args()
    common.write_jsonl(a.out, {"bench": "machine", **common.machine()})
    start = time.perf_counter()
    records = []
    for setting in a.settings.split(","):
        records += run(setting, [int(b) for b in a.batches.split(",")], a.budget_s, a.out)
    print(table(records))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
