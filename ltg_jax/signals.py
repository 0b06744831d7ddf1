"""Longtail signals of a classifier's outputs (higher = more longtail): pure, batched, jit-able.

Every signal works in log space (log_softmax / logsumexp), so saturated logits (|l| ~ 1e4) give
finite values *and* finite gradients: the guidance step differentiates these.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

Array = jax.Array

SIGNAL_NAMES = ("entropy", "energy", "max_softmax", "loss", "epistemic")


def _entropy_from_log_probs(log_probs: Array) -> Array:
    """[..., K] log-probabilities -> [...] entropy; 0·log 0 counts as 0."""
    # exp(log p) underflows to exactly 0 where log p is very negative but finite, so the
    # product is 0 (not 0·-inf = NaN) and so is its gradient.
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def entropy(logits: Array) -> Array:
    """Predictive entropy H(softmax(l)): [B, K] -> [B]."""
    return _entropy_from_log_probs(jax.nn.log_softmax(logits, axis=-1))


def energy(logits: Array, temperature: float = 1.0) -> Array:
    """Free energy -T·logsumexp(l / T): [B, K] -> [B]; high for inputs far from the data."""
    return -temperature * jax.nn.logsumexp(logits / temperature, axis=-1)


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Per-sample cross-entropy CE(l, y): [B, K], int [B] -> [B]."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def max_softmax(logits: Array) -> Array:
    """Negated maximum softmax probability -max_k p_k: [B, K] -> [B], in [-1, -1/K].

    Negated so that, like every signal here, higher means less confident (more longtail).
    """
    return -jnp.exp(jnp.max(jax.nn.log_softmax(logits, axis=-1), axis=-1))


def mutual_information(member_logits: Array) -> Array:
    """Epistemic uncertainty H(mean_m p_m) - mean_m H(p_m): [B, M, K] -> [B], >= 0."""
    log_probs = jax.nn.log_softmax(member_logits, axis=-1)
    num_members = member_logits.shape[-2]
    # log of the mean probability, in log space so that saturated members stay finite.
    mean_log_probs = jax.nn.logsumexp(log_probs, axis=-2) - jnp.log(num_members)
    total = _entropy_from_log_probs(mean_log_probs)
    aleatoric = jnp.mean(_entropy_from_log_probs(log_probs), axis=-1)
    # MI >= 0 by Jensen; rounding can leave ~-1e-7 when members agree.
    return jnp.maximum(total - aleatoric, 0.0)


def longtail_signals(
    logits: Array,
    *,
    labels: Array | None = None,
    member_logits: Array | None = None,
    temperature: float = 1.0,
) -> dict[str, Array]:
    """All signals computable from what is given: logits [B, K], labels [B], members [B, M, K]."""
    out = {
        "entropy": entropy(logits),
        "energy": energy(logits, temperature),
        "max_softmax": max_softmax(logits),
    }
    if labels is not None:
        out["loss"] = cross_entropy(logits, labels)
    if member_logits is not None:
        out["epistemic"] = mutual_information(member_logits)
    return out


def weighted_signal(signals: Mapping[str, Array], weights: Mapping[str, float]) -> Array:
    """Σ_name weight·signal[name]: the combined longtail signal [B]."""
    if not weights:
        raise ValueError(f"no signal weights given; pass e.g. {{'entropy': 1.0}} ({SIGNAL_NAMES}).")
    missing = sorted(set(weights) - set(signals))
    if missing:
        raise KeyError(
            f"signals {missing} are not available (have {sorted(signals)}); 'loss' needs labels "
            "and 'epistemic' needs epistemic heads, or drop them from the weights."
        )
    return sum(float(w) * signals[name] for name, w in weights.items())
