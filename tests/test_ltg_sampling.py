"""LTG sampling runs: input checks before compute, metadata, resume after SIGKILL, grids."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import traverse_util

from ltg_jax import cli, io, ldm_training, ltg_sampling, models, predictor, sheets
from ltg_jax.data import synthetic

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = tuple(f"item {i}" for i in range(10))
# 2 classes x 3 samples, batch 2: three batches, so a kill lands mid-run.
RUN = {"classes": (1, 4), "samples_per_class": (3,), "batch_size": 2}


def load_config(name: str, arg: str | None = None):
    """get_config(arg) of configs/<name>.py, as config_flags would load it."""
    return cli.load_config_file(ROOT / "configs" / f"{name}.py", arg)


def fast_init(module, *inputs, seed: int = 0):
    """Random params from shapes only (eager flax init of convs takes seconds on CPU)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"]
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        if path[-1] == "kernel":
            return rng.standard_normal(s.shape).astype(np.float32) / np.sqrt(np.prod(s.shape[:-1]))
        return np.full(s.shape, 1.0 if path[-1] == "scale" else 0.0, np.float32)

    flat = traverse_util.flatten_dict(shapes)
    return traverse_util.unflatten_dict({k: leaf(k, v) for k, v in flat.items()})


def tiny_bundle(path: Path, heads: bool = True, num_classes: int = 10) -> Path:
    """A random ConvClassifier (+ 2 epistemic heads) bundle on [B,32,32,1]."""
    net = predictor.ConvClassifier(num_classes=num_classes, widths=(4, 8), feature_dim=8)
    params = {"predictor": fast_init(net, np.zeros((1, 32, 32, 1), np.float32))}
    head = predictor.EpistemicHeads(num_classes=num_classes, num_heads=2) if heads else None
    if head is not None:
        params["heads"] = fast_init(head, np.zeros((1, 8), np.float32), seed=1)
    meta = {"classes": list(CLASS_NAMES[:num_classes]), "input": {"shape": [32, 32, 1]}}
    return predictor.save_predictor_bundle(path, net, params, head, meta)


def tiny_mode_oracle(path: Path) -> Path:
    """A random upright / rotated classifier bundle (a mode oracle's shape)."""
    b = predictor.load_predictor_bundle(tiny_bundle(path, heads=False, num_classes=2))
    meta = {**b.metadata, "classes": ["upright", "rotated"]}
    return predictor.save_predictor_bundle(path, b.predictor, b.params, None, meta)


def tiny_pipeline(folder: Path) -> Path:
    """A random class-conditional folder (the configs/ldm.py:test and vae.py:test models)."""
    ldm, vae_cfg = load_config("ldm", "test"), load_config("vae", "test")
    unet, embedder = ldm_training.ldm_modules(ldm.model)
    vae_config = ldm_training.vae_config_dict(vae_cfg.model, scaling_factor=1.0)
    vae = models.vae_from_config(vae_config)
    rng = jax.random.key(0)
    params = {
        "unet": models.init_params(unet, rng),
        "class_embedder": models.init_params(embedder, jax.random.fold_in(rng, 1)),
    }
    vae_params = models.init_params(vae, jax.random.fold_in(rng, 2))
    pipe = ldm_training.build_pipeline(unet, embedder, params, vae, vae_params, vae_config, ldm)
    return ldm_training.export_pipeline(pipe, folder)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    return {
        "pipeline": tiny_pipeline(root / "pipeline"),
        "predictor": tiny_bundle(root / "bundle.msgpack"),
        "no_heads": tiny_bundle(root / "no_heads.msgpack", heads=False),
        "five": tiny_bundle(root / "five.msgpack", num_classes=5),
        "stale": stale_bundle(root / "stale.msgpack"),
    }


def stale_bundle(path: Path) -> Path:
    """A bundle whose params do not fit its architecture (e.g. saved by an older version)."""
    bundle = predictor.load_predictor_bundle(tiny_bundle(path))
    wider = predictor.ConvClassifier(num_classes=10, widths=(4, 16), feature_dim=8)
    return predictor.save_predictor_bundle(
        path, wider, bundle.params, bundle.heads, bundle.metadata
    )


def ltg_config(assets, **overrides):
    config = load_config("ltg", "test")
    config.pipeline, config.predictor = str(assets["pipeline"]), str(assets["predictor"])
    config.update_from_flattened_dict({**RUN, **overrides})
    return config


@pytest.fixture(scope="module")
def reference(assets, tmp_path_factory):
    """An uninterrupted run (in-process; it also fills the compilation cache)."""
    workdir = tmp_path_factory.mktemp("reference")
    summary = ltg_sampling.run_ltg(ltg_config(assets), workdir)
    return workdir, summary


# ---------------------------------------------------------------- checks before compute


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        ({"pipeline": "/no/such/folder"}, FileNotFoundError, "no model folder.*--config.pipeline"),
        ({"pipeline": "{tmp}"}, ValueError, "no model_index.json"),
        ({"predictor": "{tmp}/nope.msgpack"}, FileNotFoundError, "--config.predictor.*train"),
        ({"predictor": "{bad}"}, ValueError, "--config.predictor"),
        ({"predictor": "stale"}, ValueError, r"does not run on the decoded \(32, 32, 1\) images"),
        ({"classes": (1, 10)}, ValueError, r"class ids \[10\] out of range \[0, 10\)"),
        ({"class_names": ("a", "b")}, ValueError, "2 class names for 10 classes"),
        ({"predictor": "five"}, ValueError, "folder has 10 classes but the predictor 5"),
        ({"signal": "entropy,margin"}, ValueError, r"unknown \['margin'\]"),
        ({"predictor": "no_heads", "signal": "epistemic"}, ValueError, "needs epistemic heads"),
        ({"samples_per_class": (1, 2, 3)}, ValueError, "one per class"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"sampler.solver": "euler"}, ValueError, "solver='euler'"),
    ],
)
def test_bad_inputs_fail_before_compute(assets, tmp_path, overrides, error, match):
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"\x00not msgpack")
    fill = {"{tmp}": str(tmp_path), "{bad}": str(bad)}
    config = ltg_config(assets)
    for key, value in overrides.items():
        if isinstance(value, str):
            for k, v in fill.items():
                value = value.replace(k, v)
            value = str(assets.get(value, value))
        config.update_from_flattened_dict({key: value})
    workdir = tmp_path / "work"
    with pytest.raises(error, match=match):
        ltg_sampling.run_ltg(config, workdir)
    assert not workdir.exists()  # nothing written, nothing compiled


def test_plan_fixes_global_indices():
    batches = ltg_sampling.pending_batches(7, {0, 1, 3}, 2)  # batches are fixed: [2k, 2k+1]
    assert [b.tolist() for b, _ in batches] == [[2, 3], [4, 5], [6, 6]]
    assert [w.tolist() for _, w in batches] == [[True, False], [True, True], [True, False]]
    plan = ltg_sampling.Plan((1, 4), ("a", "b"), ("a", "b"), (2, 3))
    np.testing.assert_array_equal(plan.class_positions(), [0, 0, 1, 1, 1])


def test_signal_specs():
    from ltg_jax import diffusion

    assert diffusion.parse_signal("entropy") == {"entropy": 1.0}
    assert diffusion.parse_signal("entropy:1, epistemic:0.5") == {"entropy": 1, "epistemic": 0.5}
    with pytest.raises(ValueError, match="not a number"):
        diffusion.parse_signal("entropy:x")


# ---------------------------------------------------------------- outputs


def test_dataset_metadata_and_outputs(reference):
    workdir, summary = reference
    data = workdir / ltg_sampling.DATA_DIR
    rows = synthetic.read_rows(data)
    assert [r["index"] for r in rows] == list(range(6))
    row = rows[4]
    assert row["file_name"] == "004_item_4/0000004.png" and (data / row["file_name"]).is_file()
    assert (row["class_id"], row["class_name"], row["label"]) == (4, "item 4", "item 4")
    assert (row["seed"], row["guidance"], row["w"], row["variant"]) == (0, "entropy", 2.0, "test")
    assert 0 <= row["predicted_class"] < 10 and 0.1 <= row["predicted_prob"] <= 1.0
    assert row["predicted_name"] == f"item {row['predicted_class']}"
    assert set(row["signals"]) == {
        "entropy",
        "energy",
        "max_softmax",
        "loss",
        "epistemic",
        "guidance",
    }
    assert row["signals"]["guidance"] == row["signals"]["entropy"]
    config = io.read_json(workdir / ltg_sampling.CONFIG_FILE)
    assert row["model_hash"] == config["model_hash"] and len(row["model_hash"]) == 64
    assert row["predictor_hash"] == config["predictor_hash"]

    loaded = synthetic.load_synthetic(data)
    assert loaded.images.shape == (6, 32, 32, 1)
    np.testing.assert_array_equal(loaded.labels, [1, 1, 1, 4, 4, 4])

    assert summary["num_samples"] == 6 and summary["generated"] == 6
    per_class = io.read_json(workdir / ltg_sampling.SUMMARY_FILE)["per_class"]
    assert per_class["001_item_1"]["count"] == 3
    mean = np.mean([r["signals"]["loss"] for r in rows[:3]])
    assert per_class["001_item_1"]["mean_signals"]["loss"] == pytest.approx(mean)

    # The contact sheet: hardest (highest signal) first, each tile upscaled 3x to 96 px.
    sheet = io.load_png(workdir / ltg_sampling.SHEETS_DIR / "004_item_4.png")
    order = sorted(rows[3:], key=lambda r: -r["signals"]["guidance"])
    at = sheets.layout((32, 32, 1), columns=4, caption_lines=2, title="x")
    for i, r in enumerate(order):
        x, y = at.origin(i)
        tile = io.load_png(data / r["file_name"]).repeat(3, 0).repeat(3, 1)
        np.testing.assert_array_equal(sheet[y : y + 96, x : x + 96], np.repeat(tile, 3, -1))


def test_other_config_in_same_workdir_is_refused(assets, reference):
    workdir, _ = reference
    with pytest.raises(ValueError, match=r"holds a different run \(\['config.seed: 0 -> 1'\]"):
        ltg_sampling.run_ltg(ltg_config(assets, seed=1), workdir)


# ---------------------------------------------------------------- kill -9 and resume

DRIVER = """
import os, runpy, sys, time
from ltg_jax.data import synthetic

delay = float(os.environ.get("LTG_TEST_WRITE_DELAY", "0"))
append = synthetic.append_rows

def slow_append(path, rows):
    time.sleep(delay)  # between a sample's PNG and its metadata line: the worst moment to die
    append(path, rows)

synthetic.append_rows = slow_append
sys.argv[0] = "sample.ltg"
runpy.run_module("sample.ltg", run_name="__main__")
"""


def _counts(data: Path) -> tuple[int, int]:
    """(PNG files, complete metadata lines) written so far."""
    meta = data / synthetic.METADATA_FILE
    lines = meta.read_text().count("\n") if meta.exists() else 0
    return len(list(data.glob("*/*.png"))), lines


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_equals_uninterrupted_run(assets, reference, tmp_path):
    ref, _ = reference
    workdir = tmp_path / "killed"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    overrides = [
        f"--config.{k}={','.join(map(str, v))}" for k, v in RUN.items() if k != "batch_size"
    ]
    cmd = [
        sys.executable,
        str(driver),
        f"--config={ROOT / 'configs' / 'ltg.py'}:test",
        f"--workdir={workdir}",
        f"--config.pipeline={assets['pipeline']}",
        f"--config.predictor={assets['predictor']}",
        "--config.batch_size=2",
        *overrides,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".cache" / "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
    }
    log = (tmp_path / "log.txt").open("w")
    proc = subprocess.Popen(
        cmd, env={**env, "LTG_TEST_WRITE_DELAY": "0.5"}, stdout=log, stderr=subprocess.STDOUT
    )
    data = workdir / ltg_sampling.DATA_DIR
    deadline = time.time() + 240
    try:
        # Kill once some samples are complete and the next PNG is written without its line.
        while time.time() < deadline and proc.poll() is None:
            pngs, lines = _counts(data)
            if lines >= 2 and pngs > lines:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "log.txt").read_text()[-3000:]
    pngs, lines = _counts(data)
    assert 2 <= lines < 6 and pngs > lines, (pngs, lines)  # really killed mid-run

    # A kill inside an atomic write leaves its temp file; the restart must clean it up, and
    # only it: another program's temp file in the workdir is not ours to delete.
    (data / "001_item_1" / f".0000002.png.x1y2{io.PARTIAL_SUFFIX}").write_bytes(b"partial")
    foreign = data / "001_item_1" / ".0000002.png.x1y2.tmp"
    foreign.write_bytes(b"someone else's")
    subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=240, check=True)
    assert foreign.read_bytes() == b"someone else's"
    foreign.unlink()

    rows, ref_rows = synthetic.read_rows(data), synthetic.read_rows(ref / ltg_sampling.DATA_DIR)
    assert [r["index"] for r in rows] == list(range(6))  # every sample exactly once
    assert rows == ref_rows
    meta = synthetic.METADATA_FILE
    assert (data / meta).read_bytes() == (ref / ltg_sampling.DATA_DIR / meta).read_bytes()
    for r in rows:  # pixel-equal
        np.testing.assert_array_equal(
            io.load_png(data / r["file_name"]),
            io.load_png(ref / ltg_sampling.DATA_DIR / r["file_name"]),
        )
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == sorted(
        p.relative_to(ref / ltg_sampling.DATA_DIR) for p in (ref / ltg_sampling.DATA_DIR).rglob("*")
    )  # no stray temp files
    summary = json.loads((workdir / ltg_sampling.SUMMARY_FILE).read_text())
    assert summary["resumed_with"] == lines and summary["num_samples"] == 6


# ---------------------------------------------------------------- grids


def test_class_grid(assets, tmp_path):
    config = load_config("grid", "test")
    config.pipeline, config.classes = str(assets["pipeline"]), (0, 3, 7)
    path = ltg_sampling.run_grid(config, tmp_path)
    grid = io.load_png(path)
    assert grid.shape == (3 * 33 + 1, 2 * 33 + 1, 1)  # 3 classes x per_row 2, 32 px + padding
