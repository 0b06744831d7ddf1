"""A 2-D NHWC convolution whose input gradient XLA CPU keeps on its fast path inside loops.

Autodiff of `lax.conv_general_dilated` gives the input gradient as a convolution with the
kernel's in/out axes swapped by dimension labels (`01oi`). In a straight-line program XLA CPU
makes that kernel canonical, but inside a `while` body or a `lax.cond` branch (the sampler's
`lax.scan`) it leaves the convolution on the slow generic path: a guided step ran 2.7-5x
slower there than jitted alone (benchmarks/RESULTS.md §2). Here the backward pass builds the
flipped, axis-swapped kernel as an array, so every convolution it emits is `01io`. Values are
those of autodiff (tests/test_conv.py); only the emitted HLO differs. Being a custom VJP, it
supports reverse mode (grad, vjp: what guidance and training use) but not `jax.jvp`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")
Pads = tuple[tuple[int, int], tuple[int, int]]


def _conv(x: jax.Array, kernel: jax.Array, strides, pads: Pads, lhs_dilation, precision):
    return lax.conv_general_dilated(
        x,
        kernel,
        strides,
        pads,
        lhs_dilation=lhs_dilation,
        dimension_numbers=NHWC,
        precision=precision,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_explicit_vjp(x, kernel, strides, pads: Pads, precision):
    return _conv(x, kernel, strides, pads, (1, 1), precision)


def _fwd(x, kernel, strides, pads, precision):
    return _conv(x, kernel, strides, pads, (1, 1), precision), (x, kernel)


def _input_grad_pads(x_shape, kernel_shape, g_shape, strides, pads: Pads) -> Pads:
    """Padding that makes the stride-1 conv of the stride-dilated cotangent x-shaped."""
    out = []
    for d in range(2):
        size_k, (lo, _), s = kernel_shape[d], pads[d], strides[d]
        before = size_k - 1 - lo
        dilated = (g_shape[1 + d] - 1) * s + 1
        out.append((before, x_shape[1 + d] + size_k - 1 - before - dilated))
    return tuple(out)


def _bwd(strides, pads, precision, residuals, g):
    x, kernel = residuals
    # dx[i] = Σ_k g_dilated[i + lo − k] W[k]: a correlation with the flipped kernel, in/out
    # swapped. Materialising that kernel is what keeps the convolution canonical.
    flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    dx_pads = _input_grad_pads(x.shape, kernel.shape, g.shape, strides, pads)
    dx = _conv(g, flipped, (1, 1), dx_pads, strides, precision)
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, strides, pads, (1, 1), precision), kernel)
    return dx.astype(x.dtype), kernel_vjp(g)[0]


_conv_explicit_vjp.defvjp(_fwd, _bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
    **kwargs,
) -> jax.Array:
    """Drop-in for `lax.conv_general_dilated` (flax `nn.Conv(conv_general_dilated=...)`).

    2-D NHWC/HWIO convolutions without dilation or feature groups (every conv of our
    models) take the explicit-VJP path; anything else goes to lax unchanged.
    """
    simple = (
        lhs.ndim == 4
        and _is_nhwc(dimension_numbers, lhs.ndim)
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and feature_group_count == 1
        and not kwargs
    )
    if not simple:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **kwargs,
        )
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv_explicit_vjp(lhs, rhs, strides, pads, precision)


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
    """Whether `dimension_numbers` (flax passes ConvDimensionNumbers) mean NHWC/HWIO/NHWC."""
    if dimension_numbers is None:
        return False
    expected = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, NHWC)
    given = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    return given == expected
