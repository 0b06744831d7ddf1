"""The guidance step: exact gradients, the w = 0 identity, window/stride/schedule, recurrence."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_diffusion as toy

from ltg_jax import guidance, schedulers

SCHEDULE = schedulers.ddim_schedule(toy.SCHEDULER, 4)
LABELS = jnp.array([0, 2])


@pytest.fixture(scope="module")
def params():
    return toy.init_params()


def _closures(params, t=500.0):
    eps_fn = lambda z: toy.eps_fn(params, z, jnp.full(z.shape[:1], t, z.dtype), LABELS)
    signal_of_x0 = lambda x0: toy.signal_fn(params, toy.decode_fn(params, x0), LABELS)
    return eps_fn, signal_of_x0


def test_weights_follow_window_stride_and_schedule():
    w = guidance.guidance_weights(guidance.GuidanceConfig(w=2.0), 5)
    np.testing.assert_array_equal(w, [2.0] * 5)
    cfg = guidance.GuidanceConfig(w=2.0, start=0.2, end=0.8, stride=2)  # steps 1..3 -> 1, 3
    np.testing.assert_array_equal(guidance.guidance_weights(cfg, 5), [0, 2, 0, 2, 0])
    lin = guidance.GuidanceConfig(w=1.0, w_end=0.0, w_schedule="linear")
    np.testing.assert_allclose(guidance.guidance_weights(lin, 5), [1, 0.75, 0.5, 0.25, 0])
    cos = guidance.GuidanceConfig(w=1.0, w_end=0.0, w_schedule="cosine")
    np.testing.assert_allclose(guidance.guidance_weights(cos, 3), [1, 0.5, 0], atol=1e-7)
    assert not guidance.guidance_weights(guidance.GuidanceConfig(w=0.0), 4).any()


def test_config_rejects_bad_switches():
    with pytest.raises(ValueError, match="grad_through"):
        guidance.GuidanceConfig(grad_through="vae")
    with pytest.raises(ValueError, match="normalise"):
        guidance.GuidanceConfig(normalise="l1")
    with pytest.raises(ValueError, match="unknown guidance config keys"):
        guidance.GuidanceConfig.from_config({"weight": 1.0})
    cfg = guidance.default_config()
    cfg.w, cfg.recurrence = 3.0, 2
    assert guidance.GuidanceConfig.from_config(cfg) == guidance.GuidanceConfig(w=3.0, recurrence=2)


def test_normalise_modes():
    g = jnp.stack([jnp.full((2, 2, 1), 3.0), jnp.zeros((2, 2, 1))])
    z = jnp.stack([jnp.full((2, 2, 1), 0.5), jnp.full((2, 2, 1), 2.0)])
    norm = lambda x: np.sqrt(np.sum(np.square(x), axis=(1, 2, 3)))
    np.testing.assert_allclose(norm(guidance.normalise_grad(g, z, "unit")), [1.0, 0.0])
    np.testing.assert_allclose(norm(guidance.normalise_grad(g, z, "latent_norm")), [1.0, 0.0])
    np.testing.assert_array_equal(guidance.normalise_grad(g, z, "none"), g)


@pytest.mark.parametrize("grad_through", ["unet", "z0"])
def test_gradient_matches_finite_differences(params, grad_through):
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: x.astype(jnp.float64), params)
        eps_fn, signal_of_x0 = _closures(p64)
        z = jax.random.normal(jax.random.key(1), (2, *toy.LATENT), jnp.float64)
        alpha_t, w = jnp.float64(0.4), 1.5
        eps_hat, signal = jax.jit(
            functools.partial(guidance.longtail_guidance, grad_through=grad_through),
            static_argnums=(0, 1),
        )(eps_fn, signal_of_x0, z, alpha_t, w)
        eps0 = jax.jit(eps_fn)(z)
        g = (eps0 - eps_hat) / (w * jnp.sqrt(1 - alpha_t))

        @jax.jit
        def total(z):
            eps = eps_fn(z) if grad_through == "unet" else eps0
            return jnp.sum(signal_of_x0(schedulers.tweedie_x0(z, eps, alpha_t)))

        np.testing.assert_allclose(
            signal, jax.jit(signal_of_x0)(schedulers.tweedie_x0(z, eps0, alpha_t)), rtol=1e-12
        )
        h = 1e-5
        for k in range(3):
            v = jax.random.normal(jax.random.key(10 + k), z.shape, jnp.float64)
            fd = (total(z + h * v) - total(z - h * v)) / (2 * h)
            np.testing.assert_allclose(jnp.vdot(g, v), fd, rtol=1e-7, atol=1e-9)


def test_unet_and_z0_gradients_differ(params):
    eps_fn, signal_of_x0 = _closures(params)
    z = jax.random.normal(jax.random.key(1), (2, *toy.LATENT))
    run = lambda mode: jax.jit(
        lambda z: guidance.longtail_guidance(eps_fn, signal_of_x0, z, 0.4, 1.0, grad_through=mode)
    )(z)[0]
    unet, z0 = run("unet"), run("z0")
    assert float(jnp.max(jnp.abs(unet - z0))) > 1e-4


def _step_fn(params, cfg: guidance.GuidanceConfig, with_signal: bool, eta: float):
    """Jitted one denoise step at step index 1 with runtime weight w_i."""
    eps_fn, signal_of_x0 = _closures(params, t=float(SCHEDULE.timesteps[1]))

    @jax.jit
    def step(z, keys, w_i):
        signal = signal_of_x0 if with_signal else None
        prev, sig, _ = guidance.denoise_step(eps_fn, signal, SCHEDULE, 1, z, w_i, keys, cfg, eta)
        return prev, sig

    return step


def _inputs():
    z = jax.random.normal(jax.random.key(3), (2, *toy.LATENT))
    keys = jax.random.split(jax.random.key(4), 2)
    return z, keys


@pytest.mark.parametrize("eta", [0.0, 0.8])
def test_zero_weight_is_the_unguided_step_bit_for_bit(params, eta):
    z, keys = _inputs()
    cfg = guidance.GuidanceConfig(w=1.0, recurrence=2, grad_through="unet")
    guided, sig = _step_fn(params, cfg, True, eta)(z, keys, jnp.float32(0.0))
    plain, _ = _step_fn(params, cfg, False, eta)(z, keys, jnp.float32(0.0))
    np.testing.assert_array_equal(guided, plain)
    assert bool(jnp.all(jnp.isnan(sig)))
    # and the plain step is diffusers' DDIM step on the same model output
    eps = _closures(params, t=float(SCHEDULE.timesteps[1]))[0](z)
    noise = guidance.step_noise(keys, 0, toy.LATENT)
    ref = schedulers.ddim_step(SCHEDULE, eps, 1, z, noise, eta)
    np.testing.assert_allclose(plain, ref, atol=1e-6)


def test_recurrence_renoises_and_repeats(params):
    z, keys = _inputs()
    eta, w = 0.5, 2.0
    cfg3 = guidance.GuidanceConfig(w=w, recurrence=3, normalise="unit")
    out3, sig3 = _step_fn(params, cfg3, True, eta)(z, keys, jnp.float32(w))
    out1, _ = _step_fn(params, guidance.GuidanceConfig(w=w, normalise="unit"), True, eta)(
        z, keys, jnp.float32(w)
    )
    assert float(jnp.max(jnp.abs(out3 - out1))) > 1e-3

    # Reference: guided step, forward-diffuse back to t with that iteration's fresh noise.
    eps_fn, signal_of_x0 = _closures(params, t=float(SCHEDULE.timesteps[1]))
    a_t, a_prev = schedulers.step_alphas(SCHEDULE, 1)

    @jax.jit
    def reference(z, keys):
        for r in range(3):
            eps_hat, sig = guidance.longtail_guidance(
                eps_fn, signal_of_x0, z, a_t, w, grad_through="z0", normalise="unit"
            )
            x0 = schedulers.tweedie_x0(z, eps_hat, a_t)
            noise = guidance.step_noise(keys, 2 * r, toy.LATENT)
            prev = schedulers.ddim_update(x0, eps_hat, a_t, a_prev, noise, eta)
            fresh = guidance.step_noise(keys, 2 * r + 1, toy.LATENT)
            z = schedulers.renoise(prev, a_t, a_prev, fresh)
        return prev, sig

    prev, sig = reference(z, keys)
    np.testing.assert_allclose(out3, prev, atol=1e-5)
    np.testing.assert_allclose(sig3, sig, atol=1e-5)


def test_guided_noise_estimate_raises_the_signal(params):
    z, _ = _inputs()
    eps_fn, signal_of_x0 = _closures(params, t=float(SCHEDULE.timesteps[1]))
    a_t = SCHEDULE.alpha_t[1]

    @jax.jit
    def signal_of_guided_x0(w):
        eps_hat, _ = guidance.longtail_guidance(
            eps_fn, signal_of_x0, z, a_t, w, normalise="latent_norm"
        )
        return signal_of_x0(schedulers.tweedie_x0(z, eps_hat, a_t))

    base, guided = signal_of_guided_x0(0.0), signal_of_guided_x0(0.05)
    assert bool(jnp.all(guided > base)), (base, guided)
