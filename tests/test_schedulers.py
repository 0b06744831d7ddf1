"""DDIM tables and steps against stored diffusers fixtures (tools/scheduler_fixtures.py)."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltg_jax import schedulers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIXTURES / "schedulers.json").read_text())
CASES = sorted(META["cases"])
TOL = 1e-5


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "schedulers.npz") as f:
        return dict(f)


def _schedule(name: str) -> schedulers.DDIMSchedule:
    case = META["cases"][name]
    return schedulers.ddim_schedule(case["config"], case["num_inference_steps"])


@pytest.mark.parametrize("name", CASES)
def test_tables_match_diffusers(name, golden):
    s = _schedule(name)
    np.testing.assert_array_equal(np.asarray(s.timesteps), golden[f"{name}/timesteps"])
    # Our f32 tables reproduce torch's linspace and cumprod exactly.
    np.testing.assert_array_equal(np.asarray(s.alphas_cumprod), golden[f"{name}/alphas_cumprod"])


@pytest.mark.parametrize("name", CASES)
def test_steps_match_diffusers(name, golden):
    s = _schedule(name)
    g = {k: golden[f"{name}/{k}"] for k in ("samples", "model_outputs", "noise")}

    @jax.jit
    def all_steps(samples, outputs, noise):
        idx = jnp.arange(s.num_steps)
        step = lambda i, x, m, n, eta: schedulers.ddim_step(s, m, i, x, n, eta)
        x0 = jax.vmap(lambda i, x, m: schedulers.model_output_to_x0_eps(s, m, i, x)[0])(
            idx, samples, outputs
        )
        prev0 = jax.vmap(lambda i, x, m: step(i, x, m, None, 0.0))(idx, samples, outputs)
        prev1 = jax.vmap(lambda i, x, m, n: step(i, x, m, n, META["eta"]))(
            idx, samples, outputs, noise
        )
        return x0, prev0, prev1

    x0, prev0, prev1 = all_steps(g["samples"], g["model_outputs"], g["noise"])
    np.testing.assert_allclose(x0, golden[f"{name}/pred_x0"], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(prev0, golden[f"{name}/prev_eta0"], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(prev1, golden[f"{name}/prev_eta"], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("name", CASES)
def test_add_noise_and_velocity_match_diffusers(name, golden):
    s = _schedule(name)
    args = [golden[f"{name}/{k}"] for k in ("add_x0", "add_noise", "add_t")]
    noisy = schedulers.add_noise(s.alphas_cumprod, *args)
    v = schedulers.get_velocity(s.alphas_cumprod, *args)
    np.testing.assert_allclose(noisy, golden[f"{name}/noisy"], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(v, golden[f"{name}/velocity"], atol=TOL, rtol=TOL)


def test_schedule_is_a_scan_carry():
    s = _schedule("sd_leading_eps")
    z = jnp.ones((1, 2, 2, 1))

    def body(z, i):
        return schedulers.ddim_step(s, 0.1 * z, i, z), None

    out, _ = jax.lax.scan(body, z, jnp.arange(s.num_steps))
    assert out.shape == z.shape and bool(jnp.all(jnp.isfinite(out)))
    leaves = jax.tree.leaves(s)
    assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in leaves)


def test_tweedie_inverts_add_noise():
    a = jnp.float32(0.3)
    x0, eps = jnp.arange(4.0), jnp.ones(4)
    zt = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    np.testing.assert_allclose(schedulers.tweedie_x0(zt, eps, a), x0, atol=1e-6)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="timestep_spacing"):
        schedulers.ddim_schedule({"timestep_spacing": "karras"}, 10)
    with pytest.raises(ValueError, match="prediction_type"):
        schedulers.ddim_schedule({"prediction_type": "sample"}, 10)
    with pytest.raises(ValueError, match="num_inference_steps"):
        schedulers.ddim_schedule({"num_train_timesteps": 10}, 11)


DPM_CASES = sorted(META["dpm_cases"])


def _dpm(name: str) -> schedulers.DPMSchedule:
    case = META["dpm_cases"][name]
    return schedulers.make_schedule(case["config"], case["num_inference_steps"], "dpmsolver++")


@pytest.mark.parametrize("name", DPM_CASES)
def test_dpm_solver_matches_diffusers(name, golden):
    s = _dpm(name)
    np.testing.assert_array_equal(np.asarray(s.timesteps), golden[f"{name}/timesteps"])
    np.testing.assert_allclose(s.sigmas, golden[f"{name}/sigmas"], rtol=1e-6)
    samples, outputs = golden[f"{name}/samples"], golden[f"{name}/model_outputs"]

    @jax.jit
    def all_steps(samples, outputs):
        # diffusers' history at step i is ẑ0 of step i-1's inputs (zeros before the first).
        def one(i, x, m, x_before, m_before):
            x0, eps = schedulers.model_output_to_x0_eps(s, m, i, x)
            prev_i = jnp.maximum(i - 1, 0)
            hist = schedulers.model_output_to_x0_eps(s, m_before, prev_i, x_before)[0]
            return schedulers.solver_step(s, x0, eps, i, x, hist)[0]

        before = lambda a: jnp.concatenate([a[:1], a[:-1]])
        idx = jnp.arange(s.num_steps)
        return jax.vmap(one)(idx, samples, outputs, before(samples), before(outputs))

    prev = all_steps(samples, outputs)
    np.testing.assert_allclose(prev, golden[f"{name}/prev"], atol=TOL, rtol=TOL)


def test_dpm_rejects_unsupported_variants():
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        schedulers.make_schedule({"use_karras_sigmas": True}, 10, "dpmsolver++")
    with pytest.raises(ValueError, match="solver_order"):
        schedulers.make_schedule({"solver_order": 3}, 10, "dpmsolver++")
    with pytest.raises(ValueError, match="solver"):
        schedulers.make_schedule({}, 10, "euler")
