r"""Class fidelity of the embedded class-conditional LDM, judged by the oracle classifier.

python -m sample.fidelity --config configs/fidelity.py --workdir runs/fidelity
(1,000 unguided samples per class at the default DDIM steps and CFG scale; the quality bar
is >= 85% overall and >= 70% for every class.)

python -m sample.fidelity --config configs/fidelity.py:quick --workdir runs/fidelity_quick
(100 per class, for a first look.)

python -m sample.fidelity --config configs/fidelity.py:world --workdir runs/world_fidelity
(the ground-truth benchmark's LDM, 100 per class, judged by the world's mode-aware class
oracle; the mode oracle gives the share of garments lying on their side, the rare mode, of
which the LDM's training split holds 10%. --config.sample.cfg_scale=S measures another
scale: the benchmark samples at ltg_jax.assets.WORLD_CFG_SCALE, figures in docs/world.md.)
"""

import ml_collections

from ltg_jax import assets

VARIANTS = ("default", "quick", "world")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The fidelity config of variant `arg` (default: 'default')."""
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown fidelity variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model_dir = str(assets.EMBEDDED_LDM)
    config.oracle_bundle = str(assets.ORACLE_BUNDLE)  # a bundle or package.module:factory
    config.mode_oracle = ""  # optional: a classifier of the samples' modes (bundle or factory)
    config.mode_unscored_classes = ()  # classes left out of the overall mode shares
    config.per_class = 1000 if variant == "default" else 100
    config.batch_size = 250 if variant == "default" else 100
    config.grid_per_class = 10
    config.sample = ml_collections.ConfigDict()
    config.sample.num_steps = assets.DEFAULT_NUM_STEPS
    config.sample.cfg_scale = assets.DEFAULT_CFG_SCALE
    if variant == "world":
        config.model_dir = str(assets.WORLD_LDM)
        config.oracle_bundle = assets.WORLD_CLASS_ORACLE
        config.mode_oracle = str(assets.WORLD_MODE_ORACLE)
        config.mode_unscored_classes = ("Bag",)  # see configs/mine.py:world_benchmark
    return config
