"""Distilling a tiny guidance decoder: it trains, resumes, exports a loadable TAESD folder."""

from pathlib import Path

import numpy as np
import pytest

from ltg_jax import cli, io, ltg_sampling, weights
from ltg_jax import tiny_decoder_training as tdt
from ltg_jax.models import vae_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    config = cli.load_config_file(ROOT / "configs" / "tiny_decoder.py", "test")
    workdir = tmp_path_factory.mktemp("tiny")
    return config, workdir, tdt.train_tiny_decoder(config, workdir)


def test_exports_a_tiny_autoencoder_cheaper_than_the_full_decoder(trained):
    config, workdir, summary = trained
    module, params, tiny_config = weights.load_tiny_vae(workdir / tdt.FOLDER)
    assert tiny_config["decoder_block_out_channels"] == [4, 4, 4]
    z = np.zeros((2, 8, 8, 4), np.float32)
    assert vae_tiny.tiny_decode(module, params, z, 1.0).shape == (2, 32, 32, 1)
    saved = io.read_json(workdir / "eval_test.json")
    assert saved["examples"] == 64 and saved["l1_clean"] > 0 and saved["l1_noisy"] > 0
    assert 0 < saved["flops_ratio_forward_and_vjp"] < 0.2  # 4 channels vs the 16-64 of the VAE
    assert io.load_png(workdir / "comparison.png").shape[1] > 16 * 32


def test_a_rerun_resumes_and_a_bigger_budget_continues(trained):
    config, workdir, summary = trained
    again = tdt.train_tiny_decoder(config, workdir)
    assert again["l1_clean"] == summary["l1_clean"]  # restored, nothing retrained
    rows = io.read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4]


def test_sampling_guides_through_the_tiny_decoder(trained, tmp_path):
    _, workdir, _ = trained
    config = cli.load_config_file(ROOT / "configs" / "ltg.py", "test")
    config.classes, config.samples_per_class = (7,), (2,)
    config.tiny_decoder = str(workdir / tdt.FOLDER)
    summary = ltg_sampling.run_ltg(config, tmp_path / "tiny")
    config.tiny_decoder = ""
    full = ltg_sampling.run_ltg(config, tmp_path / "full")
    assert summary["tiny_decoder_hash"] and "tiny_decoder_hash" not in full
    rows = {r["index"]: r for r in io.read_jsonl(tmp_path / "tiny" / "data" / "metadata.jsonl")}
    ref = {r["index"]: r for r in io.read_jsonl(tmp_path / "full" / "data" / "metadata.jsonl")}
    # Same noise, another guidance gradient: other images (the written ones are full-VAE).
    assert any(rows[i]["signals"]["guidance"] != ref[i]["signals"]["guidance"] for i in rows)
