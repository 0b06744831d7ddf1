"""Trains the predictor and evaluates it; see configs/predictor.py for commands and results.

python -m train.predictor --config configs/predictor.py:default --workdir runs/predictor
"""

from ltg_jax import cli, parallel, predictor_training

_CONFIG, _WORKDIR = cli.define_flags(
    "configs/predictor.py:VARIANT", "Folder of checkpoints, metrics and results."
)
_DISTRIBUTED = cli.define_distributed_flag()


def main(argv):
    del argv
    cli.quiet_logging()
    parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
    predictor_training.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
