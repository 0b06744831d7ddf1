"""Distils a tiny guidance decoder from a pipeline's VAE; see configs/tiny_decoder.py.

python -m train.tiny_decoder --config configs/tiny_decoder.py --workdir runs/tiny_decoder
"""

from ltg_jax import cli, parallel, tiny_decoder_training

_CONFIG, _WORKDIR = cli.define_flags(
    "configs/tiny_decoder.py:VARIANT", "Folder of checkpoints, metrics and results."
)
_DISTRIBUTED = cli.define_distributed_flag()


def main(argv):
    del argv
    cli.quiet_logging()
    parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
    tiny_decoder_training.train_tiny_decoder(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
