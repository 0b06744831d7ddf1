"""Unguided sample grids of class ids or text prompts; see configs/grid.py.

python -m sample.grid --config configs/grid.py --workdir runs/grid
"""

from absl import app, flags, logging
from ml_collections import config_flags

from ltg_jax import ltg_sampling, parallel

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/grid.py:VARIANT")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder; the grid is workdir/grid.png.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Call jax.distributed.initialize() (default: env LTG_DISTRIBUTED=1)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # jax logs its backend probing at INFO
    parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
    path = ltg_sampling.run_grid(_CONFIG.value, _WORKDIR.value)
    if parallel.is_process_zero():
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
