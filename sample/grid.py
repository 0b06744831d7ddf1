"""Unguided sample grids of class ids or text prompts; see configs/grid.py.

python -m sample.grid --config configs/grid.py --workdir runs/grid
"""

from ltg_jax import cli, ltg_sampling, parallel

_CONFIG, _WORKDIR = cli.define_flags(
    "configs/grid.py:VARIANT", "Output folder; the grid is workdir/grid.png."
)
_DISTRIBUTED = cli.define_distributed_flag()


def main(argv):
    del argv
    cli.quiet_logging()
    parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
    path = ltg_sampling.run_grid(_CONFIG.value, _WORKDIR.value)
    if parallel.is_process_zero():
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
