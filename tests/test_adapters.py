"""Input adapters between the decoder and a predictor: values, shapes and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltg_jax import adapters
from ltg_jax.adapters import InputAdapter


def test_same_size_and_channels_is_the_identity():
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1), minval=-1, maxval=1)
    assert adapters.adapt(x, InputAdapter(size=(8, 8), channels=1)) is x


def test_range_and_imagenet_statistics():
    x = jnp.full((1, 2, 2, 3), 0.5)  # 0.75 in [0, 1]
    np.testing.assert_allclose(adapters.adapt(x, InputAdapter(range="[0,1]")), 0.75)
    out = adapters.adapt(x, InputAdapter(normalise="imagenet"))
    mean, std = adapters.NORMALISE_PRESETS["imagenet"]
    np.testing.assert_allclose(out[0, 0, 0], (0.75 - np.asarray(mean)) / np.asarray(std), rtol=1e-6)


def test_grey_rgb_and_crop():
    rgb = jnp.ones((1, 4, 8, 3)) * jnp.asarray([1.0, 0.0, -1.0])
    grey = adapters.adapt(rgb, InputAdapter(channels=1))
    np.testing.assert_allclose(grey, 0.299 - 0.114, rtol=1e-6)  # ITU-R 601 luma
    assert adapters.adapt(grey, InputAdapter(channels=3)).shape == (1, 4, 8, 3)
    # 4x8 -> crop to 4x4 keeps the aspect: resize short side 4 -> 4, centre crop the width.
    ramp = jnp.broadcast_to(jnp.arange(8.0)[None, None, :, None], (1, 4, 8, 1))
    cropped = adapters.adapt(ramp, InputAdapter(size=(4, 4), crop=True))
    np.testing.assert_array_equal(cropped[0, 0, :, 0], [2, 3, 4, 5])
    squashed = adapters.adapt(ramp, InputAdapter(size=(4, 4)))
    assert squashed.shape == (1, 4, 4, 1) and float(squashed[0, 0, 0, 0]) < 1.0


def test_gradients_flow_through_resize_and_normalisation():
    adapter = InputAdapter(size=(5, 5), channels=3, normalise="imagenet")

    def f(x):
        return jnp.sum(adapters.adapt(x, adapter) ** 2)

    g = jax.grad(f)(jax.random.normal(jax.random.key(1), (2, 16, 16, 1)))
    assert g.shape == (2, 16, 16, 1) and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum())


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="input range"):
        InputAdapter(range="0..1")
    with pytest.raises(ValueError, match="unknown predictor input keys"):
        InputAdapter.from_config({"sise": 4})
    assert InputAdapter.from_config({"size": 7}).size == (7, 7)
