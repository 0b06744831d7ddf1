"""LTGPipeline: the embedded model with our predictor, a Stable Diffusion folder with a user's.

The user's predictor (tests/user_code/user_predictor.py, a ResNet with batch norm) is given by
import path, from the API and from the command line.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ltg_jax import LTGPipeline, assets, sampling

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
USER_CODE = ROOT / "tests" / "user_code"
USER_PREDICTOR = "user_predictor:make"


@pytest.fixture(scope="module")
def user_path():
    sys.path.insert(0, str(USER_CODE))
    yield
    sys.path.remove(str(USER_CODE))


@pytest.fixture(scope="module")
def embedded():
    return LTGPipeline.from_pretrained(assets.EMBEDDED_LDM)


def test_embedded_model_with_our_predictor(embedded):
    kw = dict(num_inference_steps=2, seed=3, batch_size=2, progress=False)
    out = embedded(class_labels=[7, "bag", 9], **kw)
    assert out.images.shape == (3, 32, 32, 1) and out.images.dtype == np.float32
    assert out.images.min() >= 0.0 and out.images.max() <= 1.0
    assert {"entropy", "energy", "epistemic", "guidance"} <= set(out.signals)
    np.testing.assert_allclose(out.signals["guidance"], out.signals["epistemic"], rtol=1e-6)
    assert [m["class_name"] for m in out.metadata] == ["Sneaker", "Bag", "Ankle boot"]
    assert out.metadata[0]["ltg_scale"] == sampling.DEFAULT_LTG_SCALE
    unguided = embedded(class_labels=[7, 8, 9], ltg_scale=0.0, **kw)
    assert np.abs(unguided.images - out.images).max() > 1e-3  # guidance changed the images
    stronger = embedded(class_labels=[7, 8, 9], ltg_scale=4.0, **kw)
    assert len(embedded._samplers) == 2  # ltg_scale is a runtime argument: no new sampler
    again = embedded(class_labels=[7, 8, 9], **kw)
    np.testing.assert_array_equal(again.images, out.images)  # same seed, same images
    assert stronger.signals["epistemic"].mean() != out.signals["epistemic"].mean()
    with pytest.raises(ValueError, match="class-conditional: pass class_labels"):
        embedded(prompts=["a bag"])
    with pytest.raises(ValueError, match="'shoe' is not one of"):
        embedded(class_labels=["shoe"])


def test_sd_folder_with_a_users_predictor(user_path):
    pipe = LTGPipeline.from_pretrained(FIXTURES / "tiny_sd_hub", predictor=USER_PREDICTOR)
    prompts = ["a photo of a cat", "The dog, on a MAT!"]
    # Unguided at the golden's settings: diffusers' StableDiffusionPipeline image.
    out = pipe(prompts=prompts, ltg_scale=0.0, guidance_scale=3.0, num_inference_steps=4,
               signal="entropy", progress=False)  # fmt: skip
    golden = np.load(FIXTURES / "tiny_sd_hub_images.npz")["default"]
    assert np.abs(out.images - golden).max() <= 1e-4 * np.abs(golden).max()
    guided = pipe(prompts=prompts, class_labels=["cat", "dog"], signal="loss", ltg_scale=3.0,
                  height=24, width=32, num_inference_steps=2, progress=False)  # fmt: skip
    assert guided.images.shape == (2, 24, 32, 3)
    assert [m["class_name"] for m in guided.metadata] == ["cat", "dog"]
    assert np.isfinite(guided.signals["loss"]).all()
    with pytest.raises(ValueError, match="multiples of 8"):
        pipe(prompts=prompts, height=20, width=32, progress=False)


def test_cli_takes_a_predictor_by_import_path(tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{USER_CODE}{os.pathsep}{ROOT}"}
    cmd = [
        sys.executable, "-m", "sample.ltg", "--config", str(ROOT / "configs/ltg.py:text"),
        "--workdir", str(workdir), f"--config.pipeline={FIXTURES / 'tiny_sd_hub'}",
        f"--config.predictor={USER_PREDICTOR}", "--config.class_names=dog,bird",
        "--config.signal=loss", "--config.samples_per_class=1", "--config.batch_size=2",
        "--config.dtype=float32", "--config.remat=none", "--config.sampler.num_steps=2",
        "--config.resolution=16,24", "--config.predictor_input.size=16,16",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (workdir / "data/metadata.jsonl").read_text().splitlines()]
    assert [r["class_name"] for r in rows] == ["dog", "bird"]
    assert all(np.isfinite(r["signals"]["loss"]) for r in rows)
    from PIL import Image

    assert Image.open(workdir / "data" / rows[0]["file_name"]).size == (24, 16)  # (w, h)
