r"""Unguided sample grids: one row per class id (class models) or per prompt (text models).

  python -m sample.grid --config configs/grid.py --workdir runs/grid        # embedded model
  python -m sample.grid --config configs/grid.py:text --workdir runs/grid_sd \
      --config.pipeline=/models/sd15 --config.prompts="('a cat','a dog')"

Writes workdir/grid.png (rows = classes/prompts, per_row samples each), one jitted sampler.
"""

import ml_collections

from ltg_jax import assets

VARIANTS = ("default", "text", "test")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The grid config of variant `arg` (default: 'default')."""
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown grid variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.pipeline = str(assets.EMBEDDED_LDM)
    config.classes = ()  # class models: ids, empty = all
    config.prompts = ()  # text models: one row per prompt
    config.negative_prompt = ""
    config.per_row = 8
    config.seed = 0
    config.batch_size = 16
    config.dtype = "float32"
    config.remat = "none"
    config.resolution = ()  # pixels: () = the UNet's sample_size; 512 or 512,768 (h,w)
    config.sampler = ml_collections.ConfigDict()  # unguided: no guidance block
    config.sampler.num_steps = assets.DEFAULT_NUM_STEPS
    config.sampler.solver = "ddim"
    config.sampler.eta = 0.0
    config.sampler.cfg_scale = assets.DEFAULT_CFG_SCALE
    if variant == "text":
        config.pipeline = ""
        config.prompts = ("a photo of a cat", "a photo of a dog")
        config.per_row = 4
        config.batch_size = 4
        config.dtype = "bfloat16"
        config.sampler.num_steps = 50
        config.sampler.cfg_scale = 7.5
    elif variant == "test":
        config.per_row = 2
        config.batch_size = 4
        config.sampler.num_steps = 2
    return config
