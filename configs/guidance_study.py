r"""Does guidance do what it should? LTG vs unguided on the embedded default (issue 4's table).

  python -m sample.guidance_study --config configs/guidance_study.py --workdir runs/guidance_study

Same seeds and plan for every setting: the unguided baseline (w = 0), then weights
`weights` x `grad_through`. Writes guidance_study.{json,md,png}; each setting is a resumable
LTG run in its own folder.

  --config.ltg.samples_per_class=200 for the full-size study (10 x 200 samples per setting).
"""

from pathlib import Path

import ml_collections

from ltg_jax import assets, cli

VARIANTS = ("default", "test")


def _ltg_config(variant: str) -> ml_collections.ConfigDict:
    return cli.load_config_file(Path(__file__).with_name("ltg.py"), variant)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The study config of variant `arg` (default: 'default')."""
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown guidance_study variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.ltg = _ltg_config("epistemic" if variant == "default" else "test")
    config.ltg.signal = "epistemic"
    config.ltg.samples_per_class = (40,)
    config.ltg.batch_size = 50
    config.oracle = str(assets.ORACLE_BUNDLE)
    config.weights = (1.0, 2.0, 4.0)
    config.grad_through = ("z0", "unet")
    config.grid_columns = 10
    # Cheaper guidance, each against the w = 2 rows: the gradient through the shipped tiny
    # decoder, every 2nd step only, or only the middle half of the steps.
    w2 = {"sampler.guidance.w": 2.0}
    tiny = {"tiny_decoder": str(assets.TINY_DECODER)}
    config.extra = (
        {"name": "w2_z0_tiny", **w2, "sampler.guidance.grad_through": "z0", **tiny},
        {"name": "w2_unet_tiny", **w2, "sampler.guidance.grad_through": "unet", **tiny},
        {"name": "w2_z0_stride2", **w2, "sampler.guidance.grad_through": "z0",
         "sampler.guidance.stride": 2},
        {"name": "w2_z0_middle", **w2, "sampler.guidance.grad_through": "z0",
         "sampler.guidance.start": 0.25, "sampler.guidance.end": 0.75},
    )  # fmt: skip
    if variant == "test":
        config.ltg.samples_per_class = (1,)
        config.ltg.batch_size = 5
        config.weights = (2.0,)
        config.grad_through = ("z0",)
        config.grid_columns = 2
        config.extra = ()
    return config
