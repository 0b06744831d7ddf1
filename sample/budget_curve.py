"""Data efficiency: the mining loop at several synthetic budgets, LTG vs unguided.

python -m sample.budget_curve --workdir=runs/curve                     # the embedded default
python -m sample.budget_curve --config configs/mine.py:world --workdir=runs/world_curve

Writes curve.png, curve.json and curve.md; each scale is a resumable mining run in x<scale>/.
Scales: --config.curve.scales=0.25,0.5,1,2 (1 = the config's budget; see configs/mine.py).
"""

from pathlib import Path

from ltg_jax import budget_curve, cli, parallel

DEFAULT_CONFIG = str(cli.shipped_config("mine.py"))
_CONFIG, _WORKDIR = cli.define_flags(
    "configs/mine.py:VARIANT",
    "Output folder (rerun to resume).",
    default_config=DEFAULT_CONFIG,
    default_workdir="runs/curve",
)
_DISTRIBUTED = cli.define_distributed_flag()


def main(argv):
    del argv
    cli.quiet_logging()
    parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
    budget_curve.run_budget_curve(_CONFIG.value, _WORKDIR.value)
    if parallel.is_process_zero():
        print(f"budget curve: {Path(_WORKDIR.value) / budget_curve.CURVE_MD}", flush=True)


if __name__ == "__main__":
    cli.run(main)
