"""Class fidelity of a class-conditional diffusion model; see configs/fidelity.py.

python -m sample.fidelity --config configs/fidelity.py --workdir runs/fidelity
"""

from absl import app, flags, logging
from ml_collections import config_flags

from ltg_jax import fidelity

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/fidelity.py:VARIANT")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of the results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    fidelity.run_fidelity(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
