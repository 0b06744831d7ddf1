"""Trains the epistemic heads on a frozen predictor; see configs/epistemic_head.py.

python -m train.epistemic_head --config configs/epistemic_head.py \
    --config.predictor_workdir runs/predictor --workdir runs/epistemic_head
"""

from ltg_jax import cli, parallel, predictor_training

_CONFIG, _WORKDIR = cli.define_flags(
    "configs/epistemic_head.py:VARIANT", "Folder of the heads' checkpoints and bundle."
)
_DISTRIBUTED = cli.define_distributed_flag()


def main(argv):
    del argv
    cli.quiet_logging()
    parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
    predictor_training.train_epistemic_heads(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
