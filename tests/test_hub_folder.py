"""A Stable Diffusion folder laid out like an old hub download, end to end against diffusers.

tests/fixtures/tiny_sd_hub (tools/make_fixtures.py): configs with only SD 1.5's hub keys (no
VAE scaling_factor), legacy VAE attention names, a PNDM scheduler config and a tokenizer saved
by transformers 5 (tokenizer.json only). The goldens are diffusers' StableDiffusionPipeline +
DDIMScheduler images from our sampler's initial latents.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from ltg_jax import diffusion, models, sampling
from ltg_jax import weights as W

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
HUB = FIXTURES / "tiny_sd_hub"
# (prompts, (height, width) or None, guidance_scale, steps): as HUB_CASES in make_fixtures.py.
CASES = {
    "default": (["a photo of a cat", "The dog, on a MAT!"], None, 3.0, 4),
    "h24w32": (["a photo of a dog", "the cat"], (24, 32), 5.0, 3),
}


@pytest.fixture(scope="module")
def hub_pipe():
    return W.load_pipeline(HUB)


def test_our_defaults_are_diffusers_defaults():
    golden = json.loads((FIXTURES / "config_defaults.json").read_text())
    for name, ours in models.defaults.TABLES.items():
        theirs = golden[name]
        for key, value in ours.items():
            expected = theirs[key]
            got = list(value) if isinstance(value, tuple) else value
            assert got == expected, f"{name}.{key}: ours {value!r}, diffusers {expected!r}"
    from ltg_jax import schedulers

    for key, value in schedulers.DDIM_DEFAULTS.items():
        assert golden["ddim"][key] == value, f"ddim.{key}"


def test_hub_folder_fills_diffusers_defaults(hub_pipe):
    assert "scaling_factor" not in hub_pipe.vae_config  # the folder really omits it
    assert diffusion.vae_scaling_factor(hub_pipe) == pytest.approx(0.18215)
    assert set((HUB / "tokenizer").iterdir()) == {
        HUB / "tokenizer/tokenizer.json",
        HUB / "tokenizer/tokenizer_config.json",
    }


def test_tokenizer_json_gives_the_same_ids_as_vocab_and_merges(hub_pipe):
    golden = np.load(FIXTURES / "tiny_sd_outputs.npz")
    ids = models.tokenize(hub_pipe.tokenizer, [str(p) for p in golden["prompts"]])
    np.testing.assert_array_equal(ids, golden["sd1.token_ids"])


def _our_images(pipe, prompts, resolution, cfg_scale, steps):
    base = diffusion.text_conditional_models(pipe, resolution)
    config = sampling.SamplerConfig.from_config(
        {"scheduler": pipe.scheduler_config, "num_steps": steps, "cfg_scale": cfg_scale}
    )
    sampler = sampling.make_sampler(config, base)
    cond = diffusion.encode_prompts(pipe, prompts)
    out = sampler(diffusion.pipeline_params(pipe), np.arange(len(prompts)), cond, jax.random.key(0))
    return np.clip(np.asarray(out.images) / 2 + 0.5, 0.0, 1.0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_unguided_image_matches_diffusers_pipeline(hub_pipe, case):
    prompts, resolution, cfg_scale, steps = CASES[case]
    expected = np.load(FIXTURES / "tiny_sd_hub_images.npz")[case]
    ours = _our_images(hub_pipe, prompts, resolution, cfg_scale, steps)
    assert ours.shape == expected.shape
    rel = np.abs(ours - expected).max() / np.abs(expected).max()
    assert rel <= 1e-4, f"max relative difference {rel:.2e}"
    # Without the filled-in scaling factor the same folder decodes to another image.
    wrong = hub_pipe._replace(vae_config={**hub_pipe.vae_config, "scaling_factor": 1.0})
    assert np.abs(_our_images(wrong, prompts, resolution, cfg_scale, steps) - expected).max() > 0.1


def test_resolution_must_be_a_multiple_of_the_model_stride(hub_pipe):
    assert diffusion.latent_shape(hub_pipe, (24, 32)) == (12, 16, 4)
    assert diffusion.latent_shape(hub_pipe) == (8, 8, 4)  # unet sample_size 8 x VAE factor 2
    with pytest.raises(ValueError, match="multiples of 8"):
        diffusion.latent_shape(hub_pipe, (20, 32))


def test_a_transformer_denoiser_folder_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "sd3"
    shutil.copytree(HUB, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["transformer"] = ["diffusers", "SD3Transformer2DModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(models.UnsupportedModelError) as e:
        W.load_pipeline(folder)
    assert "denoises with a transformer (SD3, Flux, PixArt, ...)" in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_refuses_the_sdxl_refiner_in_one_line(tmp_path):
    folder = tmp_path / "refiner"
    shutil.copytree(HUB, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["requires_aesthetics_score"] = True
    (folder / "model_index.json").write_text(json.dumps(index))
    root = pathlib.Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "sample.ltg", "--config", str(root / "configs/ltg.py:text"),
           "--workdir", str(tmp_path / "run"), f"--config.pipeline={folder}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "the SDXL refiner" in lines[-1]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


# bf16 compute (weights stay f32, as ltg_jax loads them) against diffusers in float32, in
# [0, 1] pixels. Measured on this fixture: mean |diff| 0.004 / 0.007, max 0.029 / 0.059 (the
# two cases). Written-down tolerance: mean <= 0.02 (5 of 255 levels), max <= 0.15.
BF16_MEAN_TOL, BF16_MAX_TOL = 0.02, 0.15


@pytest.mark.parametrize("case", sorted(CASES))
def test_bf16_compute_stays_close_to_diffusers_float32(case):
    import jax.numpy as jnp

    prompts, resolution, cfg_scale, steps = CASES[case]
    expected = np.load(FIXTURES / "tiny_sd_hub_images.npz")[case]
    pipe = W.load_pipeline(HUB, dtype=jnp.bfloat16)
    diff = np.abs(_our_images(pipe, prompts, resolution, cfg_scale, steps) - expected)
    assert diff.mean() <= BF16_MEAN_TOL and diff.max() <= BF16_MAX_TOL, (diff.mean(), diff.max())
    assert diff.max() > 1e-4  # really computed in bf16 (float32 matches to ~1e-6)


def test_bf16_weights_halve_the_memory_and_stay_close_to_diffusers():
    import jax
    import jax.numpy as jnp

    prompts, resolution, cfg_scale, steps = CASES["default"]
    expected = np.load(FIXTURES / "tiny_sd_hub_images.npz")["default"]
    pipe = W.load_pipeline(HUB, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    leaves = jax.tree.leaves(pipe.unet_params)
    kernels = [x for x in leaves if x.ndim >= 2]
    assert {x.dtype for x in kernels} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in leaves if x.ndim == 1} == {jnp.dtype(jnp.float32)}  # biases, norms
    full = W.load_pipeline(HUB)
    size = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))
    assert size(pipe.unet_params) < 0.6 * size(full.unet_params)
    diff = np.abs(_our_images(pipe, prompts, resolution, cfg_scale, steps) - expected)
    assert diff.mean() <= BF16_MEAN_TOL and diff.max() <= BF16_MAX_TOL, (diff.mean(), diff.max())
