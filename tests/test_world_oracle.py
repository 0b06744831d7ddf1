"""The world benchmark's mode-aware class oracle."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from test_ltg_sampling import tiny_bundle

from ltg_jax import predictor, world_oracle


def constant_modes(rotated: bool) -> predictor.PredictorBundle:
    """A mode classifier that calls every image upright (or every image rotated)."""
    logits = jnp.asarray([0.0, 1.0] if rotated else [1.0, 0.0])

    def apply(params, images):
        return images.reshape(len(images), -1), jnp.broadcast_to(logits, (len(images), 2))

    return predictor.bundle_from_apply(apply, {}, ["upright", "rotated"])


def test_rotated_images_are_turned_upright_before_the_class_oracle(tmp_path):
    classes = predictor.load_predictor_bundle(tiny_bundle(tmp_path / "c.msgpack", heads=False))
    images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 1)), jnp.float32)
    params = {"classes": classes.params["predictor"], "modes": {}}
    plain = classes.predictor_apply(params["classes"], images)[1]
    upright = world_oracle.mode_aware_apply(classes, constant_modes(False))(params, images)[1]
    np.testing.assert_array_equal(upright, plain)
    lying = jnp.rot90(images, 1, (1, 2))
    turned = world_oracle.mode_aware_apply(classes, constant_modes(True))(params, lying)[1]
    np.testing.assert_allclose(turned, plain, rtol=1e-6, atol=1e-6)
    assert not np.allclose(classes.predictor_apply(params["classes"], lying)[1], plain)


def test_class_oracle_factory_loads_both_bundles(tmp_path):
    classes = tiny_bundle(tmp_path / "c.msgpack", heads=False)
    modes = tiny_bundle(tmp_path / "m.msgpack", heads=False, num_classes=2)
    oracle = world_oracle.class_oracle(classes, modes)
    assert oracle.num_classes == 10 and set(oracle.params["predictor"]) == {"classes", "modes"}
    logits = oracle.adapted_apply(oracle.params["predictor"], jnp.zeros((2, 32, 32, 1)))[1]
    assert logits.shape == (2, 10)
