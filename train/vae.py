"""Trains the embedded default's VAE; see configs/vae.py for commands and results.

python -m train.vae --config configs/vae.py --workdir runs/vae
"""

from ltg_jax import cli, ldm_training, parallel

_CONFIG, _WORKDIR = cli.define_flags(
    "configs/vae.py:VARIANT", "Folder of checkpoints, metrics and results."
)
_DISTRIBUTED = cli.define_distributed_flag()


def main(argv):
    del argv
    cli.quiet_logging()
    parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
    ldm_training.train_vae(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
