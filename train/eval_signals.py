"""AUROC of each longtail signal (few vs many classes, wrong vs right); see configs/eval_signals.py.

python -m train.eval_signals --config configs/eval_signals.py \
    --config.bundle runs/epistemic_head/predictor_bundle.msgpack --workdir runs/eval_signals
"""

from ltg_jax import cli, evaluation

_CONFIG, _WORKDIR = cli.define_flags(
    "configs/eval_signals.py:VARIANT", "Folder for signal_auroc.json and the PNG."
)


def main(argv):
    del argv
    cli.quiet_logging()
    evaluation.run_signal_evaluation(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
