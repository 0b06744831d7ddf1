"""Longtail signals: hand-computed values, MI properties, stability of values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltg_jax import signals

LN2 = float(np.log(2.0))


def test_entropy_hand_values():
    logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.0, np.log(3.0), -1e4, -1e4]])
    # p = [1/4]*4 -> ln 4; p = [1/4, 3/4, 0, 0] -> -(1/4 ln 1/4 + 3/4 ln 3/4)
    expected = [np.log(4.0), -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))]
    np.testing.assert_allclose(signals.entropy(logits), expected, rtol=1e-6)


def test_energy_hand_values():
    np.testing.assert_allclose(signals.energy(jnp.array([[0.0, 0.0]])), [-LN2], rtol=1e-6)
    # -T logsumexp(l/T), T=2, l=[2,2]: -2 (1 + ln 2)
    np.testing.assert_allclose(
        signals.energy(jnp.array([[2.0, 2.0]]), temperature=2.0), [-2 * (1 + LN2)], rtol=1e-6
    )


def test_cross_entropy_and_max_softmax_hand_values():
    logits = jnp.array([[0.0, np.log(3.0)], [np.log(3.0), 0.0]])  # p = [1/4, 3/4], [3/4, 1/4]
    labels = jnp.array([1, 1])
    np.testing.assert_allclose(
        signals.cross_entropy(logits, labels), [-np.log(0.75), -np.log(0.25)], rtol=1e-6
    )
    np.testing.assert_allclose(signals.max_softmax(logits), [-0.75, -0.75], rtol=1e-6)


def test_mutual_information_hand_value():
    # members p1 = [1, 0], p2 = [1/2, 1/2]: p̄ = [3/4, 1/4]; MI = H(p̄) - (0 + ln 2) / 2
    member_logits = jnp.array([[[1e4, -1e4], [0.0, 0.0]]])
    expected = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) - LN2 / 2
    np.testing.assert_allclose(signals.mutual_information(member_logits), [expected], rtol=1e-5)


def test_mutual_information_is_zero_when_members_agree_and_ln2_when_they_oppose():
    logits = jax.random.normal(jax.random.key(0), (5, 1, 7)) * 3
    agree = jnp.repeat(logits, 4, axis=1)  # [5, 4, 7]: identical members
    np.testing.assert_allclose(signals.mutual_information(agree), 0.0, atol=1e-6)
    oppose = jnp.array([[[1e4, -1e4], [-1e4, 1e4]]])
    np.testing.assert_allclose(signals.mutual_information(oppose), [LN2], rtol=1e-6)


def test_mutual_information_non_negative_on_random_members():
    member_logits = jax.random.normal(jax.random.key(1), (256, 8, 10)) * 5
    mi = signals.mutual_information(member_logits)
    assert mi.shape == (256,)
    assert bool(jnp.all(mi >= 0))
    assert bool(jnp.all(mi <= np.log(10) + 1e-5))  # bounded by H(p̄) <= ln K


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_values_and_gradients_finite_at_saturated_logits(scale):
    logits = jnp.array([[1.0, -1.0, 0.5], [1.0, 0.0, -1.0]]) * scale
    members = jnp.stack([logits, -logits, logits * 0.5], axis=1)  # [2, 3, 3]
    labels = jnp.array([1, 2])
    functions = {
        "entropy": lambda x: signals.entropy(x),
        "energy": lambda x: signals.energy(x),
        "max_softmax": lambda x: signals.max_softmax(x),
        "loss": lambda x: signals.cross_entropy(x, labels),
    }
    for name, fn in functions.items():
        value, grad = jax.value_and_grad(lambda x, fn=fn: jnp.sum(fn(x)))(logits)
        assert np.isfinite(value), name
        assert np.all(np.isfinite(grad)), name
    value, grad = jax.value_and_grad(lambda m: jnp.sum(signals.mutual_information(m)))(members)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_signals_are_jittable_and_batched():
    logits = jax.random.normal(jax.random.key(2), (6, 10))
    members = jax.random.normal(jax.random.key(3), (6, 4, 10))
    labels = jnp.arange(6) % 10
    out = jax.jit(lambda x, y, m: signals.longtail_signals(x, labels=y, member_logits=m))(
        logits, labels, members
    )
    assert set(out) == {"entropy", "energy", "max_softmax", "loss", "epistemic"}
    for name, value in out.items():
        assert value.shape == (6,), name
    # Higher = more longtail: uniform logits score above confident ones on every logit signal.
    flat, sharp = jnp.zeros((1, 10)), jnp.eye(10)[:1] * 20
    for fn in (signals.entropy, signals.energy, signals.max_softmax):
        assert fn(flat)[0] > fn(sharp)[0]


def test_weighted_signal_combines_and_names_missing_signals():
    values = {"entropy": jnp.array([1.0, 2.0]), "energy": jnp.array([-3.0, 0.5])}
    np.testing.assert_allclose(
        signals.weighted_signal(values, {"entropy": 2.0, "energy": 0.5}), [0.5, 4.25]
    )
    with pytest.raises(KeyError, match="epistemic heads"):
        signals.weighted_signal(values, {"epistemic": 1.0})
    with pytest.raises(ValueError, match="no signal weights"):
        signals.weighted_signal(values, {})
