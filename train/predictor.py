"""Trains the predictor and evaluates it; see configs/predictor.py for commands and results.

python -m train.predictor --config configs/predictor.py:default --workdir runs/predictor
"""

from absl import app, flags, logging
from ml_collections import config_flags

from ltg_jax import predictor_training

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/predictor.py:VARIANT")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    predictor_training.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
