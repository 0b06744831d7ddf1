r"""Distil the embedded default's tiny guidance decoder (AutoencoderTiny) from its full VAE.

  python -m train.tiny_decoder --config configs/tiny_decoder.py --workdir runs/tiny_decoder
  python -m train.tiny_decoder --config configs/tiny_decoder.py:test --workdir /tmp/td  # tests

Writes runs/tiny_decoder/tiny_decoder/ (what --config.tiny_decoder of sample.ltg takes; the
shipped copy is ltg_jax/assets/fashion_mnist_tiny_decoder/), eval_test.json and comparison.png.
Works for any pipeline folder (--config.pipeline) whose images a grain source of --config.data
provides; the student's levels must match the VAE's (here 3: 8x8 latents -> 32x32 images).

RESULTS (2026-12-02, 2 CPU cores, jax 0.10.2; the shipped copy): 3,000 steps in 13.2 min
(0.28 s/step). On the 10,000 test images the student's images differ from the full decoder's
by L1 0.032 on clean latents and 0.050 on perturbed ones (images in [-1, 1]); XLA FLOPs of
decoder forward + VJP (what guidance runs): 0.047 vs 0.243 GFLOP per image, a ratio of 0.194.
docs/tiny_decoder_comparison.png: top row full decoder, bottom row tiny. Its effect on
guidance: docs/guidance_study.md, section "Cheaper guidance".
"""

import ml_collections

from ltg_jax import assets
from ltg_jax.data import datasets

VARIANTS = ("default", "test")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The distillation config of variant `arg` (default: 'default')."""
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny_decoder variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.pipeline = str(assets.EMBEDDED_LDM)  # the teacher: its VAE
    config.data = datasets.default_config()  # the shipped Fashion-MNIST-LT training images

    config.model = ml_collections.ConfigDict()  # TAESD layout, one entry per level
    config.model.channels = (16, 16, 16)
    config.model.encoder_blocks = (1, 1, 1)
    config.model.decoder_blocks = (1, 1, 1)
    config.model.latent_channels = 4

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64
    config.train.num_steps = 3000
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 100
    config.train.weight_decay = 0.0
    config.train.grad_clip = 1.0
    config.train.noise_max = 1.0  # latents are perturbed by N(0, σ²), σ ~ U(0, noise_max)

    config.eval = ml_collections.ConfigDict()
    config.eval.max_examples = 0

    config.checkpoint_every = 500
    config.log_every = 50
    if variant == "test":
        config.model.channels = (4, 4, 4)
        config.train.batch_size = 8
        config.train.num_steps = 4
        config.train.warmup_steps = 1
        config.eval.max_examples = 64
        config.checkpoint_every = 2
        config.log_every = 2
    return config
