r"""Class fidelity of the embedded class-conditional LDM, judged by the oracle classifier.

python -m sample.fidelity --config configs/fidelity.py --workdir runs/fidelity
(1,000 unguided samples per class at the default DDIM steps and CFG scale; the quality bar
is >= 85% overall and >= 70% for every class.)

python -m sample.fidelity --config configs/fidelity.py:quick --workdir runs/fidelity_quick
(100 per class, for a first look.)
"""

import ml_collections

from ltg_jax import assets

VARIANTS = ("default", "quick")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The fidelity config of variant `arg` (default: 'default')."""
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown fidelity variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model_dir = str(assets.EMBEDDED_LDM)
    config.oracle_bundle = str(assets.ORACLE_BUNDLE)
    config.per_class = 1000 if variant == "default" else 100
    config.batch_size = 250 if variant == "default" else 100
    config.grid_per_class = 10
    config.sample = ml_collections.ConfigDict()
    config.sample.num_steps = assets.DEFAULT_NUM_STEPS
    config.sample.cfg_scale = assets.DEFAULT_CFG_SCALE
    return config
