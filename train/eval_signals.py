"""AUROC of each longtail signal (few vs many classes, wrong vs right); see configs/eval_signals.py.

python -m train.eval_signals --config configs/eval_signals.py \
    --config.bundle runs/epistemic_head/predictor_bundle.msgpack --workdir runs/eval_signals
"""

from absl import app, flags, logging
from ml_collections import config_flags

from ltg_jax import evaluation

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/eval_signals.py:VARIANT")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for signal_auroc.json and the PNG.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    evaluation.run_signal_evaluation(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
