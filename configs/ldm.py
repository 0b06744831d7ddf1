r"""The embedded default's class-conditional latent diffusion model (UNet on 8x8x4 latents).

Needs a trained VAE workdir (configs/vae.py). Trains on the balanced Fashion-MNIST training set,
class embeddings as a one-token `encoder_hidden_states`, null class (id 10) with label dropout
for classifier-free guidance, EMA weights. Exports `workdir/pipeline/`, a diffusers-format
folder (unet/, vae/, class_embedder/, scheduler/) that `ltg_jax.weights.load_pipeline` loads.

  nice -n 5 python -m train.ldm --config configs/ldm.py --workdir runs/ldm \
      --config.vae_workdir=runs/vae
  Run time on 2 CPU cores: see RESULTS. Sample grids (one row per class) every checkpoint.

  python -m train.ldm --config configs/ldm.py:test --workdir /tmp/ldm --config.vae_workdir=...

Variant `world`: the ground-truth benchmark's generative model (ltg_jax/data/world.py). It
fine-tunes the shipped LDM (its VAE kept frozen) on the `world` split, where 10% of every
class lies on its side, as a foundation model would have seen that mode:

  nice -n 5 python -m train.ldm --config configs/ldm.py:world --workdir runs/world_ldm
  nice -n 5 python -m train.ldm --config configs/ldm.py:world --workdir runs/world_ldm \
      --config.train.num_steps=6000

The shipped ltg_jax/assets/world/ldm is these two commands (the second resumes the first's
1,500 steps on a longer cosine: 23 + 49 min on 2 cores). At 1,500 steps it drew 2.6% of its
unguided CFG-1 samples on their side, at 6,000 steps 7.1% (docs/world.md).

RESULTS (2026-11-28, 2 CPU cores shared with other jobs, jax 0.10.2): 8,000 steps in 43.9 min
(0.33 s/step on average), final loss 0.045; the export is the shipped
ltg_jax/assets/fashion_mnist_ldm (12 MB). Samples at 25 DDIM steps, CFG 3 (EMA weights):
docs/embedded_ldm_samples.png; class fidelity: configs/fidelity.py.
"""

import ml_collections

from ltg_jax import assets
from ltg_jax.data import datasets

VARIANTS = ("default", "world", "test")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The LDM config of variant `arg` (default: 'default')."""
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown ldm variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.vae_workdir = "runs/vae"
    # A trained class-conditional folder to fine-tune instead (its VAE is used, frozen);
    # config.model must describe its UNet.
    config.init_pipeline = ""
    config.data_split = "train"  # the split the UNet learns from
    config.data = datasets.default_config()
    config.data.config = "full"

    config.model = ml_collections.ConfigDict()  # model-shaping keys
    config.model.num_classes = 10
    config.model.sample_size = 8
    config.model.latent_channels = 4
    config.model.block_out_channels = (48, 96)
    config.model.attention_levels = (True, True)
    config.model.layers_per_block = 1
    config.model.num_heads = 4
    config.model.embedding_dim = 64
    config.model.norm_num_groups = 16

    config.schedule = ml_collections.ConfigDict()  # the DDIM scheduler shipped with the model
    config.schedule.num_train_timesteps = 1000
    config.schedule.beta_schedule = "linear"
    config.schedule.beta_start = 1e-4
    config.schedule.beta_end = 2e-2
    config.schedule.timestep_spacing = "trailing"

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64
    config.train.num_steps = 8000
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 200
    config.train.weight_decay = 0.0
    config.train.grad_clip = 1.0
    config.train.label_dropout = 0.1
    config.train.ema_decay = 0.999

    config.sample = ml_collections.ConfigDict()  # grids during training
    config.sample.num_steps = 25
    config.sample.cfg_scale = 3.0
    config.sample.grid_per_class = 8

    config.checkpoint_every = 1000
    config.log_every = 100
    if variant == "world":
        config.init_pipeline = str(assets.EMBEDDED_LDM)
        config.data.config = "world"
        config.data_split = "world"
        config.train.num_steps = 1500
        config.train.learning_rate = 3e-4
        config.train.warmup_steps = 100
        config.checkpoint_every = 250
    if variant == "test":
        config.data.config = "lt"
        config.model.block_out_channels = (16, 16)
        config.model.layers_per_block = 1
        config.model.num_heads = 2
        config.model.embedding_dim = 16
        config.model.norm_num_groups = 4
        config.train.batch_size = 8
        config.train.num_steps = 4
        config.train.warmup_steps = 1
        config.sample.num_steps = 3
        config.sample.grid_per_class = 1
        config.checkpoint_every = 2
        config.log_every = 2
    return config
