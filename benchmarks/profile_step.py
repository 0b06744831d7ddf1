r"""Profile: the same guided step alone vs inside `lax.cond`, summed per XLA op kind.

Traces the LTG step with w a trace-time constant (XLA removes the cond: straight-line code)
and with w a runtime scalar (the `lax.cond` of `guidance.denoise_step` stays, as in the
sampler) under `jax.profiler.trace` (perfetto), and prints the ms per call of each trace event
kind, largest difference first. Also writes both compiled HLO texts for inspection.

  .venv/bin/python -m benchmarks.profile_step --setting embedded --batch 8
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks import common
from ltg_jax import guidance, sampling, schedulers


def trace_ops(fn, args, reps: int = 3) -> dict[str, float]:
    """{trace event kind: ms per call} from a perfetto trace of `reps` calls of fn."""
    common.block(fn(*args))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(reps):
                common.block(fn(*args))
        files = list(Path(d).rglob("*.trace.json.gz"))
        if not files:
            return {}
        events = json.loads(gzip.decompress(files[0].read_bytes())).get("traceEvents", [])
    sums: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        kind = re.sub(r"\.\d+", "", str(e.get("name", "")))  # fusion.12 -> fusion
        sums[kind] += e["dur"] / 1e3 / reps
    return dict(sums)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="embedded", choices=common.SETTINGS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--variant", default="z0", choices=("z0", "unet"))
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--hlo_dir", type=Path, default=Path("/tmp/ltg_bench/hlo"))
    a = p.parse_args()
    setup = common.load_setup(a.setting)
    config = common.sampler_config(setup, a.variant, 10)
    schedule = schedulers.make_schedule(dict(config.scheduler), 10, config.solver)
    m, w = setup.models, float(config.guidance.w)

    def one(params, z, cond, keys, i, w_i):
        model_fn = sampling._model_fn(m, config.cfg_scale, params, schedule.timesteps[i], cond)

        def signal_of_x0(x0):
            return m.signal_fn(params, m.decode_fn(params, x0), cond)

        return guidance.denoise_step(
            model_fn, signal_of_x0, schedule, i, z, w_i, keys, config.guidance, 0.0, ()
        )[0]

    base = common.step_inputs(setup, a.batch)
    fns = {
        "alone": (jax.jit(lambda p, z, c, k, i: one(p, z, c, k, i, w)), base),
        "in_cond": (jax.jit(one), (*base, jnp.float32(w))),
    }
    ops = {}
    a.hlo_dir.mkdir(parents=True, exist_ok=True)
    for name, (fn, args) in fns.items():
        compiled = fn.lower(*args).compile()
        (a.hlo_dir / f"{a.setting}_{name}.txt").write_text(compiled.as_text())
        ops[name] = trace_ops(compiled, args)
    kinds = sorted(
        set(ops["alone"]) | set(ops["in_cond"]),
        key=lambda k: -(ops["in_cond"].get(k, 0.0) - ops["alone"].get(k, 0.0)),
    )
    rows = [
        [k[:60], f"{ops['alone'].get(k, 0.0):.1f}", f"{ops['in_cond'].get(k, 0.0):.1f}"]
        for k in kinds[: a.top]
    ]
    print(common.markdown_table(["trace event kind", "alone ms", "in lax.cond ms"], rows))


if __name__ == "__main__":
    main()
