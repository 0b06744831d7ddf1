r"""The embedded default's VAE: 32x32x1 Fashion-MNIST images <-> 8x8x4 latents (f = 4).

Trains on the balanced Fashion-MNIST training set (60,000 images; needs the original idx
files, e.g. `apt-get install dataset-fashion-mnist`).

  nice -n 5 python -m train.vae --config configs/vae.py --workdir runs/vae
  Run time on 2 CPU cores: see RESULTS. Writes vae_config.json (with the measured
  scaling_factor), eval_test.json (test L1) and reconstruction grids.

  python -m train.vae --config configs/vae.py:test --workdir /tmp/vae   # seconds, for tests

RESULTS (2026-11-28, 2 CPU cores shared with 2-3 other jobs, jax 0.10.2): 2,000 steps in
28.6 min (0.3 s/step alone, up to 2.4 s/step contended); test L1 0.050 (images in [-1, 1]),
scaling_factor 0.651. Reconstructions: docs/embedded_vae_reconstructions.png (top rows real,
bottom rows reconstructed).
"""

import ml_collections

from ltg_jax.data import datasets

VARIANTS = ("default", "test")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The VAE config of variant `arg` (default: 'default')."""
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown vae variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = datasets.default_config()
    config.data.config = "full"

    config.model = ml_collections.ConfigDict()  # model-shaping keys
    config.model.image_channels = 1
    config.model.sample_size = 32
    config.model.block_out_channels = (16, 32, 64)
    config.model.layers_per_block = 1
    config.model.latent_channels = 4
    config.model.norm_num_groups = 8

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64
    config.train.num_steps = 2000
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 100
    config.train.weight_decay = 0.0
    config.train.grad_clip = 1.0
    config.train.kl_weight = 1e-4

    config.eval = ml_collections.ConfigDict()
    config.eval.max_examples = 0

    config.checkpoint_every = 500
    config.log_every = 50
    if variant == "test":
        config.data.config = "lt"
        config.model.block_out_channels = (8, 8, 8)
        config.model.norm_num_groups = 4
        config.train.batch_size = 8
        config.train.num_steps = 4
        config.train.warmup_steps = 1
        config.eval.max_examples = 64
        config.checkpoint_every = 2
        config.log_every = 2
    return config
