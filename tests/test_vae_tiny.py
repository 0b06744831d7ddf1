"""AutoencoderTiny (TAESD) against diffusers' PyTorch outputs on a random fixture (no torch)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltg_jax import weights
from ltg_jax.models import vae_tiny

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def loaded():
    return weights.load_tiny_vae(FIXTURES / "tiny_taesd")


def test_decode_and_encode_match_diffusers(loaded):
    module, params, config = loaded
    golden = np.load(FIXTURES / "tiny_taesd_outputs.npz")
    decoded = vae_tiny.tiny_decode(module, params, golden["latents"], config["scaling_factor"])
    assert decoded.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(decoded, golden["decoded"], rtol=1e-4, atol=1e-5)
    encoded = module.apply({"params": params}, golden["images"], method=module.encode)
    np.testing.assert_allclose(encoded, golden["encoded"], rtol=1e-4, atol=1e-5)


def test_decoder_gradient_is_finite_and_bf16_close(loaded):
    module, params, config = loaded
    z = jnp.asarray(np.load(FIXTURES / "tiny_taesd_outputs.npz")["latents"])
    loss = lambda z: jnp.mean(vae_tiny.tiny_decode(module, params, z, 1.0) ** 2)
    grad = jax.grad(loss)(z)
    assert (
        grad.shape == z.shape
        and bool(jnp.all(jnp.isfinite(grad)))
        and float(jnp.abs(grad).max()) > 0
    )
    half = vae_tiny.vae_tiny_from_config(config, dtype=jnp.bfloat16)
    out = vae_tiny.tiny_decode(half, params, z, 1.0)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, vae_tiny.tiny_decode(module, params, z, 1.0), atol=0.1)


def test_bad_folders_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json; point at an AutoencoderTiny"):
        weights.load_tiny_vae(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    config = (FIXTURES / "tiny_taesd" / "config.json").read_text()
    blocks = '"num_decoder_blocks": [\n    '
    (bad / "config.json").write_text(config.replace(blocks + "2", blocks + "3"))
    (bad / "diffusion_pytorch_model.safetensors").write_bytes(
        (FIXTURES / "tiny_taesd" / "diffusion_pytorch_model.safetensors").read_bytes()
    )
    with pytest.raises(weights.WeightsMismatchError, match="missing    decoder.layers"):
        weights.load_tiny_vae(bad)
