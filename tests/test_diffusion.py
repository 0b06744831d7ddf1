"""Pipeline adapters: the text-conditional (SD) path on tests/fixtures/tiny_sd and signals."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_ltg_sampling import load_config, tiny_bundle

from ltg_jax import adapters, diffusion, io, ltg_sampling, predictor, weights
from ltg_jax.data import synthetic

TINY_SD = Path(__file__).parent / "fixtures" / "tiny_sd"
PROMPTS = ["a photo of a cat", "a dog", "a photo of a cat"]


def encode1(pipe, prompt: str) -> np.ndarray:
    """CLIP hidden states [77, D] of one prompt."""
    return diffusion.encode_text(pipe, [prompt])[0]


@pytest.fixture(scope="module")
def pipe():
    return weights.load_pipeline(TINY_SD)


@pytest.fixture(scope="module")
def cond(pipe):
    return diffusion.encode_prompts(pipe, PROMPTS, labels=[3, 5, 3])


def test_prompt_cond_shapes(pipe, cond):
    assert cond["context"].shape == cond["uncond"].shape == (3, 77, 16)
    np.testing.assert_array_equal(cond["label"], [3, 5, 3])
    np.testing.assert_array_equal(cond["context"][0], cond["context"][2])  # encoded once
    assert not np.allclose(cond["context"][0], cond["context"][1])
    # (CLIP's float results depend slightly on the batch it runs in.)
    np.testing.assert_allclose(cond["context"][1], encode1(pipe, "a dog"), atol=1e-5)


def test_cfg_null_branch_is_the_empty_prompt(pipe, cond):
    sd = diffusion.text_conditional_models(pipe)
    null = sd.null_cond(cond)
    for row in null["context"]:
        np.testing.assert_allclose(row, encode1(pipe, ""), atol=1e-5)
    np.testing.assert_array_equal(null["label"], cond["label"])  # the loss keeps its class
    params = diffusion.pipeline_params(pipe)
    assert set(params) == {"unet", "vae"}
    eps = jax.jit(sd.eps_fn)
    z = jax.random.normal(jax.random.key(0), (3, *sd.latent_shape))
    t = jnp.full((3,), 500, jnp.int32)
    out_c, out_u = eps(params, z, t, cond), eps(params, z, t, null)
    assert out_c.shape == (3, 8, 8, 4) and not np.allclose(out_c, out_u)


def test_negative_prompt_replaces_the_empty_prompt(pipe):
    c = diffusion.encode_prompts(pipe, ["a cat"], negative_prompt="blurry")
    np.testing.assert_allclose(c["uncond"][0], encode1(pipe, "blurry"), atol=1e-5)
    np.testing.assert_array_equal(c["label"], [-1])


def test_class_adapter_needs_a_class_folder(pipe):
    with pytest.raises(ValueError, match="text_conditional_models"):
        diffusion.class_conditional_models(pipe)
    assert not diffusion.is_class_conditional(pipe)


def test_predictor_signal_on_sd_images(tmp_path, cond):
    bundle = predictor.load_predictor_bundle(tiny_bundle(tmp_path / "b.msgpack"))
    signal_fn = diffusion.predictor_signal(bundle, "loss:1,epistemic:2")
    images = jnp.tanh(jax.random.normal(jax.random.key(1), (3, 16, 16, 3)))
    labels = jnp.asarray(cond["label"])

    def total(x):
        return jnp.sum(signal_fn(bundle.params, x, {"label": labels}))

    value, grad = jax.jit(jax.value_and_grad(total))(images)
    x = adapters.adapt(images, adapters.InputAdapter(size=(32, 32), channels=1))
    assert x.shape == (3, 32, 32, 1)
    scores = bundle.scorer()(bundle.params, x, labels)
    np.testing.assert_allclose(value, jnp.sum(scores["loss"] + 2 * scores["epistemic"]), rtol=1e-5)
    assert grad.shape == images.shape and bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.abs(grad).sum()) > 0


def test_with_signal_splits_params():
    base = diffusion.sampling.SamplerModels(
        eps_fn=lambda p, z, t, c: z * p["k"],
        decode_fn=lambda p, z: z + p["k"],
        signal_fn=None,
        null_cond=None,
        latent_shape=(1, 1, 1),
    )
    models = diffusion.with_signal(base, lambda p, x, c: jnp.sum(x * p["s"], axis=(1, 2, 3)))
    params = diffusion.guided_params({"k": 2.0}, {"s": 3.0})
    z = jnp.ones((2, 1, 1, 1))
    np.testing.assert_array_equal(models.eps_fn(params, z, None, None), 2 * z)
    np.testing.assert_array_equal(
        models.signal_fn(params, models.decode_fn(params, z), None), [9, 9]
    )


def test_text_prompt_grid(tmp_path):
    config = load_config("grid", "test")
    config.pipeline, config.prompts = str(TINY_SD), ("a cat", "a dog")
    config.sampler.cfg_scale = 2.0  # runs the empty-prompt branch
    grid = io.load_png(ltg_sampling.run_grid(config, tmp_path))
    assert grid.shape == (2 * 17 + 1, 2 * 17 + 1, 3)  # 2 prompts x 2, 16 px RGB + padding


def test_ltg_run_on_a_text_folder(tmp_path):
    """Prompts per class, guided by a 32x32 grey predictor on the (resized) 16 px RGB images.

    Class names map to the predictor's classes by name ('Item 7' is its class 7), so 'loss'
    scores each sample against its own class; names it does not have are refused for 'loss'.
    """
    config = load_config("ltg", "text")
    config.update_from_flattened_dict(
        {
            "pipeline": str(TINY_SD),
            "predictor": str(tiny_bundle(tmp_path / "b.msgpack")),
            "class_names": ("Item 7", "item 2"),
            "samples_per_class": (1,),
            "batch_size": 2,
            "dtype": "float32",
            "signal": "entropy:1,loss:0.5",
            "sampler.num_steps": 2,
        }
    )
    ltg_sampling.run_ltg(config, tmp_path / "run")
    rows = synthetic.read_rows(tmp_path / "run" / ltg_sampling.DATA_DIR)
    assert [(r["file_name"], r["label"]) for r in rows] == [
        ("000_item_7/0000000.png", "a photo of a Item 7"),
        ("001_item_2/0000001.png", "a photo of a item 2"),
    ]
    bundle = predictor.load_predictor_bundle(tmp_path / "b.msgpack")
    png = io.load_png(tmp_path / "run" / ltg_sampling.DATA_DIR / rows[0]["file_name"])
    image = png.astype(np.float32) / 127.5 - 1.0
    expected = diffusion.adapted_scorer(bundle)(bundle.params, image[None], np.asarray([7]))
    assert rows[0]["signals"]["loss"] == pytest.approx(float(expected["loss"][0]), rel=1e-4)
    config.class_names = ("cat", "dog")
    with pytest.raises(ValueError, match=r"predictor has no class \['cat', 'dog'\]"):
        ltg_sampling.run_ltg(config, tmp_path / "other")
    s = rows[1]["signals"]
    assert s["guidance"] == pytest.approx(s["entropy"] + 0.5 * s["loss"], rel=1e-5)
