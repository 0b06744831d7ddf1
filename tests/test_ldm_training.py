"""The embedded default's VAE + class-conditional LDM trainers, end to end on tiny configs."""

import json

import jax
import numpy as np
import pytest
from test_ltg_sampling import load_config

from ltg_jax import checkpointing, diffusion, io, ldm_training, models, sampling, weights


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step VAE and a 4-step LDM on the long-tailed data (tiny models)."""
    root = tmp_path_factory.mktemp("ldm")
    vae_config = load_config("vae", "test")
    vae_summary = ldm_training.train_vae(vae_config, root / "vae")
    ldm_config = load_config("ldm", "test")
    ldm_config.vae_workdir = str(root / "vae")
    ldm_training.train_ldm(ldm_config, root / "ldm")
    return root, vae_summary, ldm_config


def test_vae_writes_its_config_with_the_measured_scaling_factor(trained):
    root, summary, _ = trained
    config = json.loads((root / "vae" / ldm_training.VAE_CONFIG_FILE).read_text())
    assert config["scaling_factor"] == pytest.approx(summary["scaling_factor"])
    assert summary["latent_shape"] == [8, 8, 4]  # 32x32 -> f=4 with three levels
    assert (root / "vae" / "reconstructions_000004.png").is_file()


def test_encode_mean_compiles_once_for_new_params():
    config = load_config("vae", "test")
    vae = ldm_training._vae_module(config.model)
    images = {"image": np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)}
    first = ldm_training.encode_mean(vae, models.init_params(vae, jax.random.key(0)), images)
    compiled = ldm_training._encode._cache_size()
    # A later checkpoint: new params, same module and shapes -> no new compile.
    second = ldm_training.encode_mean(vae, models.init_params(vae, jax.random.key(1)), images)
    assert ldm_training._encode._cache_size() == compiled
    assert not np.allclose(first, second)


def test_latent_scaling_factor_whitens():
    latents = np.random.default_rng(0).normal(0.0, 3.0, (1000, 8, 8, 4))
    scale = ldm_training.latent_scaling_factor(latents)
    assert np.std(latents * scale) == pytest.approx(1.0, rel=1e-6)


def test_exported_pipeline_loads_and_holds_the_ema_weights(trained):
    root, _, config = trained
    pipe = weights.load_pipeline(root / "ldm" / ldm_training.PIPELINE_DIR)
    assert pipe.class_embedder.num_classes == 10
    state, step = checkpointing.restore_latest(root / "ldm")
    assert step == config.train.num_steps
    for name in ("unet", "class_embedder"):
        exported = getattr(pipe, f"{name}_params")
        jax.tree.map(np.testing.assert_array_equal, exported, state["ema_params"][name])
    assert (root / "ldm" / "samples_000004.png").is_file()
    # The exported folder samples through the same adapter as any class-conditional model.
    sampler = sampling.make_sampler(
        {"scheduler": pipe.scheduler_config, "num_steps": 2, "cfg_scale": 2.0},
        diffusion.class_conditional_models(pipe),
    )
    out = sampler(
        diffusion.pipeline_params(pipe),
        np.arange(2, dtype=np.int32),
        np.array([0, 9], np.int32),
        jax.random.key(0),
    )
    assert out.images.shape == (2, 32, 32, 1)
    assert np.all(np.isfinite(np.asarray(out.images)))


def test_ldm_resumes_from_its_last_checkpoint(trained):
    root, _, config = trained
    config.train.num_steps = 6
    ldm_training.train_ldm(config, root / "ldm")
    rows = io.read_jsonl(root / "ldm" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6]  # steps 1-4 were not redone


def test_ldm_refuses_a_workdir_of_another_model_shape(trained):
    root, _, config = trained
    config.model.block_out_channels = (32, 32)
    with pytest.raises(ValueError, match="another model shape"):
        ldm_training.train_ldm(config, root / "ldm")


def test_load_vae_names_the_missing_step(tmp_path):
    with pytest.raises(FileNotFoundError, match="train the VAE to the end first"):
        ldm_training.load_vae(tmp_path)


def test_ema_update_moves_toward_params():
    ema = {"w": np.zeros(3)}
    out = ldm_training.ema_update(ema, {"w": np.ones(3)}, decay=0.9)
    np.testing.assert_allclose(out["w"], 0.1)
    assert models.AutoencoderKL  # the trainer's modules come from our own SD stack


def test_ldm_fine_tunes_a_trained_folder_on_another_split(trained, tmp_path):
    """init_pipeline: the UNet starts from the folder's weights, its VAE is reused frozen, and
    the latents come from config.data_split (the world benchmark's recipe)."""
    root = trained[0]
    folder = root / "ldm" / ldm_training.PIPELINE_DIR
    config = load_config("ldm", "test")
    config.init_pipeline = str(folder)
    config.vae_workdir = str(tmp_path / "no_vae_needed")
    config.data_split = "validation"
    config.train.num_steps = 2
    ldm_training.train_ldm(config, tmp_path / "tuned")
    start, tuned = weights.load_pipeline(folder), weights.load_pipeline(tmp_path / "tuned/pipeline")
    jax.tree.map(np.testing.assert_array_equal, tuned.vae_params, start.vae_params)
    assert tuned.vae_config["scaling_factor"] == start.vae_config["scaling_factor"]
    # EMA (decay 0.999) of 2 steps from the folder's weights: near them, not equal.
    diffs = jax.tree.leaves(
        jax.tree.map(lambda a, b: float(np.abs(a - b).max()), tuned.unet_params, start.unet_params)
    )
    assert 0 < max(diffs) < 0.01
    latents = np.load(tmp_path / "tuned" / ldm_training.LATENTS_FILE)
    assert latents["latent"].shape[0] == 1000  # the validation split, not train
    config.model.block_out_channels = (32, 32)
    with pytest.raises(ValueError, match="differ from config.model"):
        ldm_training.train_ldm(config, tmp_path / "other")
