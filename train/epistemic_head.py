"""Trains the epistemic heads on a frozen predictor; see configs/epistemic_head.py.

python -m train.epistemic_head --config configs/epistemic_head.py \
    --config.predictor_workdir runs/predictor --workdir runs/epistemic_head
"""

from absl import app, flags, logging
from ml_collections import config_flags

from ltg_jax import predictor_training

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/epistemic_head.py:VARIANT")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of the heads' checkpoints and bundle.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    predictor_training.train_epistemic_heads(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
