"""Oracle class fidelity of a class-conditional LDM: counts, agreement and resumption."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from test_ltg_sampling import load_config, tiny_mode_oracle

from ltg_jax import fidelity, io, ldm_training, models, predictor
from ltg_jax.data import fashion_mnist


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A randomly initialised tiny class-conditional LDM, exported in diffusers format."""
    config = load_config("ldm", "test")
    unet, embedder = ldm_training.ldm_modules(config.model)
    vae_model = load_config("vae", "test").model
    vae_config = ldm_training.vae_config_dict(vae_model, scaling_factor=1.5)
    vae = models.vae_from_config(vae_config)
    rng = jax.random.key(0)
    params = {
        "unet": models.init_params(unet, rng),
        "class_embedder": models.init_params(embedder, rng),
    }
    pipe = ldm_training.build_pipeline(
        unet, embedder, params, vae, models.init_params(vae, rng), vae_config, config
    )
    return ldm_training.export_pipeline(pipe, tmp_path_factory.mktemp("ldm") / "pipeline")


@pytest.fixture(scope="module")
def oracle_path(tmp_path_factory):
    net = predictor.ConvClassifier(widths=(4,), feature_dim=8, norm_groups=2)
    params = net.init(jax.random.key(1), jnp.zeros((1, 32, 32, 1)))["params"]
    path = tmp_path_factory.mktemp("oracle") / "oracle.msgpack"
    metadata = {"classes": list(fashion_mnist.CLASS_NAMES)}  # as the shipped oracle's
    return predictor.save_predictor_bundle(path, net, {"predictor": params}, metadata=metadata)


def fidelity_config(folder, oracle) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model_dir = str(folder)
    config.oracle_bundle = str(oracle)
    config.mode_oracle = ""
    config.mode_unscored_classes = ()
    config.per_class = 2
    config.batch_size = 10
    config.grid_per_class = 2
    config.sample = ml_collections.ConfigDict({"num_steps": 2, "cfg_scale": 2.0})
    return config


def test_fidelity_reports_oracle_agreement_and_resumes(tiny_folder, oracle_path, tmp_path):
    config = fidelity_config(tiny_folder, oracle_path)
    report = fidelity.run_fidelity(config, tmp_path)
    assert report["samples"] == 20 and report["count"] == 20
    rows = io.read_jsonl(tmp_path / fidelity.BATCHES_FILE)
    labels = np.concatenate([r["labels"] for r in rows])
    predictions = np.concatenate([r["predictions"] for r in rows])
    np.testing.assert_array_equal(labels, fidelity.class_major_labels(10, 2))
    assert report["overall"] == pytest.approx(np.mean(labels == predictions))
    assert set(report["per_class"]) == {
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    }  # fmt: skip
    grid = io.load_png(tmp_path / "samples_per_class.png")
    assert grid.shape[:2] == (10 * 33 + 1, 2 * 33 + 1)  # 10 class rows of 2 samples, 1px pad
    # A rerun finds every batch done: nothing is sampled again, the report is the same.
    again = fidelity.run_fidelity(config, tmp_path)
    assert len(io.read_jsonl(tmp_path / fidelity.BATCHES_FILE)) == len(rows)
    assert again["overall"] == report["overall"]


def test_fidelity_reports_the_mode_oracle_shares(tiny_folder, oracle_path, tmp_path):
    modes_path = tiny_mode_oracle(tmp_path / "modes.msgpack")
    config = fidelity_config(tiny_folder, oracle_path)
    config.mode_oracle = str(modes_path)
    config.mode_unscored_classes = ("Bag",)
    report = fidelity.run_fidelity(config, tmp_path / "run")
    rows = io.read_jsonl(tmp_path / "run" / fidelity.BATCHES_FILE)
    modes = np.concatenate([r["modes"] for r in rows])
    labels = np.concatenate([r["labels"] for r in rows])
    assert modes.shape == (20,)
    scored = labels != 8  # Bag left out of the overall shares
    assert report["modes"]["overall"]["rotated"] == pytest.approx(np.mean(modes[scored] == 1))
    assert report["modes"]["overall"]["upright"] == pytest.approx(np.mean(modes[scored] == 0))
    assert report["modes"]["per_class"]["Bag"]["rotated"] == pytest.approx(
        np.mean(modes[labels == 8] == 1)
    )
    # The mode oracle fixes what a batch records: another one needs a fresh workdir.
    config.mode_oracle = ""
    with pytest.raises(ValueError, match="another model shape"):
        fidelity.run_fidelity(config, tmp_path / "run")


def test_fidelity_rejects_batches_that_do_not_tile(tiny_folder, oracle_path, tmp_path):
    config = fidelity_config(tiny_folder, oracle_path)
    config.batch_size = 7
    with pytest.raises(ValueError, match="batch_size that divides"):
        fidelity.run_fidelity(config, tmp_path)


def test_fidelity_needs_a_class_conditional_model(oracle_path, tmp_path):
    config = fidelity_config("tests/fixtures/tiny_sd", oracle_path)
    with pytest.raises(ValueError, match="no class_embedder"):
        fidelity.run_fidelity(config, tmp_path)
