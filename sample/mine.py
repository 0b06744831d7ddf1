"""The generative data mining loop (what `make mine` runs); see configs/mine.py.

python -m sample.mine --workdir=runs/mine                       # the main job, resumable
python -m sample.mine --config configs/mine.py:select --workdir=runs/mine_select
python -m sample.mine --config configs/mine.py:world_select --workdir=runs/world_select
"""

from pathlib import Path

from ltg_jax import cli, mining, parallel

DEFAULT_CONFIG = str(cli.shipped_config("mine.py"))
_CONFIG, _WORKDIR = cli.define_flags(
    "configs/mine.py:VARIANT",
    "Output folder (rerun to resume).",
    default_config=DEFAULT_CONFIG,
    default_workdir="runs/mine",
)
_DISTRIBUTED = cli.define_distributed_flag()


def main(argv):
    del argv
    cli.quiet_logging()
    parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
    config = _CONFIG.value
    if config.variant in mining.SELECT_VARIANTS:
        out = mining.run_selection(config, _WORKDIR.value)
        print(f"selection: {Path(_WORKDIR.value) / mining.SELECTION_JSON} (best: {out['best']})")
        return
    out = mining.run_mining(config, _WORKDIR.value)
    if parallel.is_process_zero():
        print(mining.headline(out, _WORKDIR.value), flush=True)


if __name__ == "__main__":
    cli.run(main)
