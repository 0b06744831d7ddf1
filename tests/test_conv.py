"""The explicit-VJP convolution: autodiff's values, canonical kernels inside loops."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ltg_jax.models.conv import NHWC, conv_general_dilated

CASES = [  # (input HW, kernel, strides, padding)
    ((9, 9), 3, (1, 1), ((1, 1), (1, 1))),
    ((8, 8), 3, (2, 2), ((1, 1), (1, 1))),  # UNet downsample
    ((9, 7), 3, (2, 2), ((0, 1), (0, 1))),  # VAE encoder downsample, odd sizes
    ((6, 6), 1, (1, 1), ((0, 0), (0, 0))),
    ((7, 5), 3, (1, 1), "SAME"),  # the predictor's flax default
    ((10, 10), 3, (2, 2), "VALID"),
]


def _inputs(hw, k, seed=0):
    kx, kk, kg = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (2, *hw, 3))
    kernel = jax.random.normal(kk, (k, k, 3, 5))
    return x, kernel, kg


@pytest.mark.parametrize("hw,k,strides,padding", CASES)
def test_values_and_gradients_match_lax(hw, k, strides, padding):
    x, kernel, kg = _inputs(hw, k)

    def ours(x, kern):
        return conv_general_dilated(x, kern, strides, padding, dimension_numbers=NHWC)

    def reference(x, kern):
        return lax.conv_general_dilated(x, kern, strides, padding, dimension_numbers=NHWC)

    y = ours(x, kernel)
    np.testing.assert_array_equal(y, reference(x, kernel))
    cotangent = jax.random.normal(kg, y.shape)
    got = jax.vjp(ours, x, kernel)[1](cotangent)
    want = jax.vjp(reference, x, kernel)[1](cotangent)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def test_other_convolutions_fall_back_to_lax():
    x, _, kg = _inputs((8, 8), 3)
    grouped = jax.random.normal(kg, (3, 3, 1, 3))  # depthwise: one input channel per group
    y = conv_general_dilated(
        x, grouped, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=3
    )
    want = lax.conv_general_dilated(
        x, grouped, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=3
    )
    np.testing.assert_array_equal(y, want)


def _loop_input_grad_hlo(conv_fn) -> str:
    """Compiled HLO of an input gradient taken inside a fori_loop (as in the sampler)."""
    x, kernel, _ = _inputs((8, 8), 3)

    def loss(x, kern):
        return jnp.sum(conv_fn(x, kern, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC) ** 2)

    def looped(x, kern):
        return lax.fori_loop(0, 2, lambda i, x: x - 1e-3 * jax.grad(loss)(x, kern), x)

    return jax.jit(looped).lower(x, kernel).compile().as_text()


def test_input_gradient_inside_a_loop_uses_only_canonical_kernels():
    labels = re.findall(r"dim_labels=([\w>-]+)", _loop_input_grad_hlo(conv_general_dilated))
    assert labels, "expected convolutions in the compiled loop"
    assert set(labels) == {"b01f_01io->b01f"}, labels
