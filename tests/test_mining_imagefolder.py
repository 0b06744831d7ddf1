"""The whole mining loop, through the command line, on things that are not the embedded default.

A small image-folder dataset (RGB 64x64, 4 long-tailed classes), a text pipeline (the tiny SD
hub fixture), a predictor and oracle of another architecture (a ResNet with batch norm, given
by import path) reached through input adapters (resize 16 -> 20 px, ImageNet normalisation).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ltg_jax.data import datasets

ROOT = pathlib.Path(__file__).resolve().parents[1]
USER_CODE = ROOT / "tests" / "user_code"
CLASSES = ("bird", "cat", "dog", "fish")  # sorted: the class ids of the image folder
COLOURS = {
    "bird": (230, 40, 40),
    "cat": (40, 200, 60),
    "dog": (50, 70, 230),
    "fish": (240, 230, 60),
}
TRAIN_COUNTS = {"bird": 24, "cat": 12, "dog": 6, "fish": 3}


def write_imagefolder(root: pathlib.Path, seed: int = 0) -> None:
    """root/<split>/<class>/*.png: a disc of the class colour on noise, random place and size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    for split, counts in (("train", TRAIN_COUNTS), ("test", dict.fromkeys(CLASSES, 4))):
        for name, count in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 80, (64, 64, 3))
                cy, cx, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(8, 16)
                image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = COLOURS[name]
                Image.fromarray(image.astype(np.uint8)).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    write_imagefolder(root)
    return root


def test_imagefolder_descriptor_and_split(folder):
    data = {**datasets.default_config().to_dict(), "source": "imagefolder", "root": str(folder),
            "many_threshold": 20, "few_threshold": 5}  # fmt: skip
    info = datasets.describe(data)
    assert info.class_names == CLASSES and info.image_shape == (64, 64, 3)
    assert info.train_counts == (24, 12, 6, 3) and info.splits == ("train", "test")
    assert info.groups() == {"many": (0,), "medium": (1, 2), "few": (3,)}
    test = datasets.load_split(data, "test")
    assert test["image"].shape == (16, 64, 64, 3)
    assert test["label"].tolist() == np.repeat(np.arange(4), 4).tolist()
    assert test["image"].min() >= -1.0 and test["image"].max() <= 1.0
    with pytest.raises(ValueError, match="no split 'validation'"):
        datasets.load_split(data, "validation")


@pytest.mark.parametrize("model", ["tiny_sd_hub", "tiny_sdxl"])
def test_mining_loop_on_an_imagefolder_with_a_users_predictor_via_cli(folder, tmp_path, model):
    workdir = tmp_path / "mine"
    env = {**os.environ, "PYTHONPATH": f"{USER_CODE}{os.pathsep}{ROOT}"}
    cmd = [
        sys.executable, "-m", "sample.mine", "--config", str(ROOT / "configs/mine.py:test"),
        f"--workdir={workdir}", "--config.data.source=imagefolder",
        f"--config.data.root={folder}", "--config.data.many_threshold=20",
        "--config.data.few_threshold=5", "--config.predictor=user_predictor:make",
        "--config.oracle=user_predictor:make",
        f"--config.pipeline={ROOT / 'tests/fixtures' / model}",
        "--config.budget.medium=1", "--config.budget.few=2", "--config.eval.split=test",
        "--config.seeds=0,1", "--config.max_train_examples=0",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((workdir / "report.json").read_text())
    assert set(report["arms"]) == {"real", "unguided", "ltg"}
    for arm in report["arms"].values():
        assert {"many", "medium", "few", "overall"} <= set(arm)
    rows = [
        json.loads(line)
        for line in (workdir / "synthetic/ltg/data/metadata.jsonl").read_text().splitlines()
    ]
    # medium classes cat, dog get 1 each, the few class fish 2; prompts name the class.
    assert sorted(r["class_name"] for r in rows) == ["cat", "dog", "fish", "fish"]
    assert all(r["label"] == f"a photo of a {r['class_name']}" for r in rows)
    png = Image.open(workdir / "synthetic/ltg/data" / rows[0]["file_name"])
    assert png.size == (16, 16) and png.mode == "RGB"  # generated at the SD model's size
    assert (workdir / "accuracy_groups.png").is_file()
    assert "report:" in done.stdout


def test_epistemic_heads_on_a_users_predictor_via_cli(folder, tmp_path):
    """train.epistemic_head on the ResNet's features; the heads then guide LTGPipeline."""
    workdir = tmp_path / "heads"
    env = {**os.environ, "PYTHONPATH": f"{USER_CODE}{os.pathsep}{ROOT}"}
    cmd = [
        sys.executable, "-m", "train.epistemic_head",
        "--config", str(ROOT / "configs/epistemic_head.py:test"), f"--workdir={workdir}",
        "--config.predictor=user_predictor:make", "--config.data.source=imagefolder",
        f"--config.data.root={folder}",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (workdir / "predictor_bundle.msgpack").exists()  # not our ConvClassifier
    summary = json.loads((workdir / "heads_summary.json").read_text())
    assert len(summary["train_accuracy_per_head"]) == 4

    sys.path.insert(0, str(USER_CODE))
    try:
        from ltg_jax import LTGPipeline

        pipe = LTGPipeline.from_pretrained(
            ROOT / "tests/fixtures/tiny_sd_hub", predictor="user_predictor:make",
            heads=workdir / "heads.msgpack",
        )  # fmt: skip
    finally:
        sys.path.remove(str(USER_CODE))
    out = pipe(prompts=["a photo of a cat"] * 2, signal="epistemic", num_inference_steps=2,
               progress=False)  # fmt: skip
    assert np.isfinite(out.signals["epistemic"]).all() and (out.signals["epistemic"] >= 0).all()


def test_tfds_source_by_builder_name(tmp_path):
    """Any registered tensorflow-datasets builder by name: here ours, prepared offline."""
    from ltg_jax.data import fashion_mnist, fashion_mnist_lt  # noqa: F401 - registers it

    data = {**datasets.default_config().to_dict(), "source": "tfds",
            "name": "fashion_mnist_lt/lt", "data_dir": str(tmp_path)}  # fmt: skip
    info = datasets.describe(data)
    assert info.class_names == fashion_mnist.CLASS_NAMES and info.image_shape == (28, 28, 1)
    assert info.train_counts == fashion_mnist.TRAIN_COUNTS  # counted from the labels
    # ImageNet-LT's thresholds unless set (> 100 many, < 20 few): 83 and 50 images are medium.
    assert info.groups() == {"many": tuple(range(8)), "medium": (8, 9), "few": ()}
    test = datasets.load_split(data, "test", max_examples=5)
    assert test["image"].shape == (5, 28, 28, 1) and test["image"].min() >= -1.0
