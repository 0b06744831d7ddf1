"""Stable Diffusion XL: our Flax stack against diffusers' StableDiffusionXLPipeline.

tests/fixtures/tiny_sdxl (`tools/make_fixtures.py sdxl`) is a random-weight folder of SDXL's
structure at reduced width, saved by diffusers: a UNet with the `text_time` embedding and
per-block transformer depths, CLIPTextModel + CLIPTextModelWithProjection with their two
tokenizers (pads `<|endoftext|>` and `!`), an SDXL VAE (scaling 0.13025) and SDXL's Euler
scheduler config. The goldens are transformers' / diffusers' outputs; no torch at test time.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from ltg_jax import LTGPipeline, diffusion, models, sampling
from ltg_jax import weights as W

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SDXL = FIXTURES / "tiny_sdxl"
# (prompts, (height, width), guidance_scale, steps): as the `sdxl` cases of make_fixtures.py.
CASES = {
    "default": (["a photo of a cat", "The dog, on a MAT!  (photo)"], (16, 16), 5.0, 3),
    "h16w24": (["a photo of a dog", "the cat"], (16, 24), 3.0, 2),
}
ATOL = 1e-5


@pytest.fixture(scope="module")
def pipe():
    return W.load_pipeline(SDXL)


@pytest.fixture(scope="module")
def golden():
    return np.load(FIXTURES / "tiny_sdxl_outputs.npz")


def close(ours, theirs, rtol=1e-5):
    """Max abs difference within rtol of the reference's scale."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    scale = max(float(np.abs(theirs).max()), 1e-6)
    assert float(np.abs(ours - theirs).max()) <= rtol * scale


def test_folder_loads_both_text_encoders_and_tokenizers(pipe, golden):
    assert isinstance(pipe.text_encoder, models.CLIPTextModel)
    assert isinstance(pipe.text_encoder_2, models.CLIPTextModelWithProjection)
    assert pipe.unet.addition_time_embed_dim == 8 and pipe.unet.transformer_depth == (1, 2)
    assert diffusion.vae_scaling_factor(pipe) == pytest.approx(0.13025)
    prompts = [str(p) for p in golden["prompts"]]
    np.testing.assert_array_equal(models.tokenize(pipe.tokenizer, prompts), golden["ids_1"])
    np.testing.assert_array_equal(models.tokenize(pipe.tokenizer_2, prompts), golden["ids_2"])


def test_text_encoders_match_transformers(pipe, golden):
    hidden_1, pooled_1 = models.clip_penultimate(
        pipe.text_encoder, pipe.text_encoder_params, golden["ids_1"]
    )
    hidden_2, text_embeds = models.clip_penultimate(
        pipe.text_encoder_2, pipe.text_encoder_2_params, golden["ids_2"]
    )
    close(hidden_1, golden["te1_penultimate"])
    close(pooled_1, golden["te1_pooled"])
    close(hidden_2, golden["te2_penultimate"])
    close(text_embeds, golden["te2_text_embeds"])


def test_prompt_encoding_matches_diffusers_encode_prompt(pipe, golden):
    prompts = [str(p) for p in golden["prompts"]]
    cond = diffusion.encode_prompts(pipe, prompts)
    close(cond["context"], golden["prompt_embeds"])
    close(cond["text_embeds"], golden["pooled_prompt_embeds"])
    # No negative prompt: SDXL base's force_zeros_for_empty_prompt, as diffusers.
    assert not golden["negative_prompt_embeds"].any()
    np.testing.assert_array_equal(cond["uncond"], golden["negative_prompt_embeds"])
    zeros = golden["negative_pooled_prompt_embeds"]
    np.testing.assert_array_equal(cond["uncond_text_embeds"], zeros)
    np.testing.assert_array_equal(cond["time_ids"], [[16, 16, 0, 0, 16, 16]] * 2)
    blurry = diffusion.encode_prompts(pipe, prompts, negative_prompt="blurry", resolution=(16, 24))
    close(blurry["uncond"], golden["negative_blurry_prompt_embeds"])
    close(blurry["uncond_text_embeds"], golden["negative_blurry_pooled_prompt_embeds"])
    np.testing.assert_array_equal(blurry["time_ids"], [[16, 24, 0, 0, 16, 24]] * 2)


def test_unet_text_time_embedding_matches_diffusers(pipe, golden):
    added = {"text_embeds": golden["unet.text_embeds"], "time_ids": golden["unet.time_ids"]}
    eps = jax.jit(lambda p, z, t, c, a: models.unet_apply(pipe.unet, p, z, t, c, a))(
        pipe.unet_params, golden["unet.latents"], golden["unet.timesteps"],
        golden["unet.context"], added,
    )  # fmt: skip
    close(eps, golden["unet.eps"])
    with pytest.raises(ValueError, match="needs added_cond"):
        models.unet_apply(pipe.unet, pipe.unet_params, golden["unet.latents"], 3,
                          golden["unet.context"])  # fmt: skip


def our_images(pipe, prompts, resolution, cfg_scale, steps):
    base = diffusion.text_conditional_models(pipe, resolution)
    config = sampling.SamplerConfig.from_config(
        {"scheduler": pipe.scheduler_config, "num_steps": steps, "cfg_scale": cfg_scale}
    )
    sampler = sampling.make_sampler(config, base)
    cond = diffusion.encode_prompts(pipe, prompts, resolution=resolution)
    out = sampler(diffusion.pipeline_params(pipe), np.arange(len(prompts)), cond, jax.random.key(0))
    return np.clip(np.asarray(out.images) / 2 + 0.5, 0.0, 1.0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_unguided_image_matches_diffusers_sdxl_pipeline(pipe, golden, case):
    prompts, resolution, cfg_scale, steps = CASES[case]
    images = our_images(pipe, prompts, resolution, cfg_scale, steps)
    close(images, golden[f"images.{case}"], rtol=1e-4)


def test_published_sdxl_parameter_counts_equal_diffusers():
    """SDXL base 1.0's UNet and text encoders built abstractly (eval_shape): no memory."""
    published = json.loads((FIXTURES / "sdxl_param_counts.json").read_text())
    count = lambda m: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(models.abstract_params(m)))
    assert count(models.unet_from_config(published["unet_config"])) == published["unet_params"]
    for name in ("text_encoder", "text_encoder_2"):
        module = models.clip_from_config(published[f"{name}_config"])
        assert count(module) == published[f"{name}_params"], name


def test_save_and_reload_reproduces_every_tensor(pipe, tmp_path):
    W.save_pipeline(pipe, tmp_path / "copy")
    for part in ("text_encoder_2", "tokenizer_2", "unet", "vae", "text_encoder", "tokenizer"):
        assert (tmp_path / "copy" / part).is_dir(), part
    again = W.load_pipeline(tmp_path / "copy")
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a = jax.tree.leaves(getattr(pipe, f"{name}_params"))
        b = jax.tree.leaves(getattr(again, f"{name}_params"))
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), name
    assert W.model_hash(tmp_path / "copy") == W.model_hash(SDXL)
    assert again.tokenizer_2_files == pipe.tokenizer_2_files


def test_guided_sdxl_through_ltg_pipeline_at_a_chosen_size():
    pipe = LTGPipeline.from_pretrained(SDXL)
    kw = dict(prompts=["a photo of a bag", "a photo of a shirt"], class_labels=["Bag", "Shirt"],
              height=16, width=24, num_inference_steps=2, progress=False)  # fmt: skip
    guided = pipe(signal="entropy", ltg_scale=4.0, **kw)
    unguided = pipe(signal="entropy", ltg_scale=0.0, **kw)
    assert guided.images.shape == (2, 16, 24, 3) and np.isfinite(guided.images).all()
    assert np.abs(guided.images - unguided.images).max() > 1e-4  # the gradient reached z_t
    assert np.isfinite(guided.signals["entropy"]).all()


def test_sdxl_folder_through_the_command_line(tmp_path):
    workdir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "sample.ltg", "--config", str(ROOT / "configs/ltg.py:text"),
        "--workdir", str(workdir), f"--config.pipeline={SDXL}",
        "--config.classes=8,6", "--config.samples_per_class=1",
        "--config.batch_size=2", "--config.dtype=float32", "--config.remat=decoder",
        "--config.sampler.num_steps=2", "--config.resolution=16,24",
        "--config.predictor_input.size=32,32",  # the shipped predictor's input
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (workdir / "data/metadata.jsonl").read_text().splitlines()]
    assert [r["class_name"] for r in rows] == ["bag", "shirt"]
    from PIL import Image

    assert Image.open(workdir / "data" / rows[0]["file_name"]).size == (24, 16)  # (w, h)
