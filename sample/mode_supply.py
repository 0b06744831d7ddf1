"""The perfect generator's ceiling on the ground-truth benchmark: rare-mode accuracy against
the number of true rotated images in the synthetic fine-tuning set.

python -m sample.mode_supply --config configs/mine.py:world --workdir=runs/world_supply \
    --config.supply.compare_report=docs/world/report_nofilter/report.json

Writes supply.png, supply.json and supply.md; every (share, draw, seed) fine-tuning resumes.
Shares: --config.supply.shares=0,0.0625,0.25,1; draws: --config.generation_seeds=0,1,2.
"""

from pathlib import Path

from ltg_jax import cli, mode_supply, parallel

DEFAULT_CONFIG = f"{cli.shipped_config('mine.py')}:world"
_CONFIG, _WORKDIR = cli.define_flags(
    "configs/mine.py:world",
    "Output folder (rerun to resume).",
    default_config=DEFAULT_CONFIG,
    default_workdir="runs/world_supply",
)
_DISTRIBUTED = cli.define_distributed_flag()


def main(argv):
    del argv
    cli.quiet_logging()
    parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
    mode_supply.run_mode_supply(_CONFIG.value, _WORKDIR.value)
    if parallel.is_process_zero():
        print(f"mode supply: {Path(_WORKDIR.value) / mode_supply.SUPPLY_MD}", flush=True)


if __name__ == "__main__":
    cli.run(main)
