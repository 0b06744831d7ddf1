"""The ground-truth benchmark's class oracle: judges garments upright or lying on their side.

The shipped oracle (trained on the balanced, upright Fashion-MNIST) cannot read a garment on
its side (0.086 accuracy on the rotated test split). The world's mode oracle can tell the two
modes apart, and a rotation by 90 degrees is exact, so: an image the mode oracle calls
rotated is turned upright before the shipped oracle classifies it. Use it as
`--config.oracle=ltg_jax.world_oracle:class_oracle`.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp

from ltg_jax import assets, predictor
from ltg_jax.data import world


def mode_aware_apply(classes: predictor.PredictorBundle, modes: predictor.PredictorBundle):
    """apply(params, images [B,H,W,C]) -> (features, logits) of `classes`, on images the
    `modes` classifier calls rotated turned upright first. params: {'classes', 'modes'}."""

    def apply(params, images: jax.Array):
        _, mode_logits = modes.predictor_apply(params["modes"], images)
        rotated = jnp.argmax(mode_logits, -1) == world.RARE
        upright = jnp.where(rotated[:, None, None, None], jnp.rot90(images, -1, (1, 2)), images)
        return classes.predictor_apply(params["classes"], upright)

    return apply


def class_oracle(
    class_oracle_path: str | os.PathLike = assets.ORACLE_BUNDLE,
    mode_oracle_path: str | os.PathLike = assets.WORLD_MODE_ORACLE,
) -> predictor.PredictorBundle:
    """The mode-aware class oracle as a bundle (a `package.module:factory` for the configs)."""
    classes = predictor.load_predictor_bundle(class_oracle_path)
    modes = predictor.load_predictor_bundle(mode_oracle_path)
    params = {"classes": classes.params["predictor"], "modes": modes.params["predictor"]}
    return predictor.bundle_from_apply(
        mode_aware_apply(classes, modes),
        params,
        classes.class_names,
        input=dataclasses.asdict(classes.input_adapter),
    )
