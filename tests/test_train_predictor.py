"""Trainers on real (tiny) Fashion-MNIST-LT: exact resume, frozen predictor, failure messages."""

import hashlib
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags
from ml_collections import config_flags

from ltg_jax import checkpointing, evaluation, predictor, predictor_training
from ltg_jax.data import fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
# ml_collections loads config files with the deprecated load_module(): not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def _config_module(name: str):
    # configs/ is a folder of files named on the command line, not an importable package.
    spec = importlib.util.spec_from_file_location(
        f"configs_{name}", ROOT / "configs" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


predictor_config = _config_module("predictor")
heads_config = _config_module("epistemic_head")
eval_signals_config = _config_module("eval_signals")


def _params(workdir):
    state, step = checkpointing.restore_latest(workdir)
    return step, checkpointing.host_state(state["params"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny predictor trained 4 steps straight, and 2 + 2 steps with an interruption."""
    config = predictor_config.get_config("test")
    straight = tmp_path_factory.mktemp("straight")
    results = predictor_training.train_and_evaluate(config, straight)
    resumed = tmp_path_factory.mktemp("resumed")
    assert predictor_training.train_and_evaluate(config, resumed, stop_after_steps=2) is None
    resumed_results = predictor_training.train_and_evaluate(config, resumed)
    return config, straight, results, resumed, resumed_results


def test_interrupted_run_resumes_to_identical_params(trained):
    _, straight, _, resumed, resumed_results = trained
    assert resumed_results["resumed_from_step"] == 2
    step_a, params_a = _params(straight)
    step_b, params_b = _params(resumed)
    assert step_a == step_b == 4
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)


def test_evaluation_files_and_groups(trained):
    _, straight, results, _, _ = trained
    saved = json.loads((straight / predictor_training.EVAL_TEST_FILE).read_text())
    assert {"overall", "many", "medium", "few", "per_class"} <= set(saved)
    assert saved["overall"] == pytest.approx(results["test"]["overall"])
    assert set(saved["per_class"]) == set(fashion_mnist.CLASS_NAMES)
    rows = evaluation.per_class_rows(saved)
    assert [r["name"] for r in rows] == list(fashion_mnist.CLASS_NAMES)
    assert (straight / predictor_training.EVAL_VALIDATION_FILE).is_file()
    assert json.loads((straight / checkpointing.CONFIG_FILE).read_text())["model"]["widths"] == [
        4,
        8,
    ]
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in r for r in rows) and any("test/overall" in r for r in rows)


def test_resuming_with_another_model_shape_is_refused(trained):
    config, straight, *_ = trained
    config = config.copy_and_resolve_references()
    config.model.widths = (4, 4)
    with pytest.raises(ValueError, match=r"fresh --workdir.*config\.json"):
        predictor_training.train_and_evaluate(config, straight)


def test_checkpoint_of_another_shape_fails_with_the_fix(tmp_path):
    tx = optax.adam(1e-3)
    manager = checkpointing.create_manager(tmp_path)
    saved = {"w": jnp.ones((3, 4))}
    checkpointing.save(manager, 1, predictor_training.create_train_state(saved, tx), force=True)
    other = predictor_training.create_train_state({"w": jnp.ones((3, 5))}, tx)
    with pytest.raises(ValueError, match=r"another shape \(.*params/w: checkpoint \(3, 4\)"):
        checkpointing.restore_or_init(manager, other)
    with pytest.raises(ValueError, match=str(tmp_path)):
        checkpointing.restore_or_init(manager, other)
    state, step = checkpointing.restore_or_init(
        manager, predictor_training.create_train_state({"w": jnp.zeros((3, 4))}, tx)
    )
    assert step == 1 and np.all(np.asarray(state["params"]["w"]) == 1)
    manager.close()


def _parse_config_flags(*overrides: str):
    argv = ["prog", f"--config={ROOT / 'configs' / 'predictor.py'}:test", *overrides]
    flag_values = flags.FlagValues()
    # sys_argv: config_flags defines the --config.* override flags from argv at definition time.
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    return flag_values.config


def test_config_overrides_apply_and_unknown_keys_are_rejected():
    assert _parse_config_flags("--config.train.num_steps=7").train.num_steps == 7
    assert _parse_config_flags("--config.model.widths=(2,4)").model.widths == (2, 4)
    # config_flags raises while parsing, suggesting the key meant.
    with pytest.raises((flags.Error, AttributeError), match='Did you mean "num_steps"'):
        _parse_config_flags("--config.train.num_stepz=7")


def test_unknown_variant_names_the_choices():
    with pytest.raises(ValueError, match="choose from"):
        predictor_config.get_config("tiny")


def test_missing_source_dir_fails_before_training(tmp_path):
    config = predictor_config.get_config("test")
    config.data.config = "full"
    config.data.data_dir = str(tmp_path / "tfds")  # nothing prepared there
    config.data.source_dir = str(tmp_path / "no-such-folder")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        predictor_training.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def heads_run(trained, tmp_path_factory):
    """Epistemic heads on the straight run's predictor, with digests of its checkpoints."""
    _, straight, *_ = trained
    before = _tree_digest(straight / checkpointing.CHECKPOINT_DIR)
    model, params_before, _ = predictor_training.load_trained_predictor(straight)
    config = heads_config.get_config("test")
    config.predictor_workdir = str(straight)
    workdir = tmp_path_factory.mktemp("heads")
    result = predictor_training.train_epistemic_heads(config, workdir)
    after = _tree_digest(straight / checkpointing.CHECKPOINT_DIR)
    return model, params_before, before, after, workdir, result


def test_heads_leave_the_predictor_bit_identical(heads_run):
    model, params_before, before, after, workdir, result = heads_run
    assert before == after  # the predictor's checkpoint files are untouched
    bundle = predictor.load_predictor_bundle(workdir / predictor_training.BUNDLE_FILE)
    jax.tree.map(np.testing.assert_array_equal, bundle.params["predictor"], params_before)
    images = jax.random.uniform(jax.random.key(0), (5, 32, 32, 1), minval=-1, maxval=1)
    forward = jax.jit(predictor.module_apply(model))
    _, logits_before = forward(params_before, images)
    _, logits_after = forward(bundle.params["predictor"], images)
    np.testing.assert_array_equal(logits_after, logits_before)  # same program: bit for bit
    # The scorer is another XLA program (heads fused in): equal up to float rounding.
    scored = bundle.scorer(return_outputs=True)(bundle.params, images)
    np.testing.assert_allclose(scored["logits"], logits_before, rtol=1e-5, atol=1e-6)
    assert len(result["train_accuracy_per_head"]) == 4


def test_heads_are_bootstrapped_and_differ(heads_run):
    *_, workdir, _ = heads_run
    bundle = predictor.load_predictor_bundle(workdir / predictor_training.BUNDLE_FILE)
    kernel = np.asarray(bundle.params["heads"]["heads"]["out"]["kernel"])  # [M, D, K]
    assert kernel.shape[0] == 4 and not np.allclose(kernel[0], kernel[1])
    counts = predictor_training.bootstrap_counts(jax.random.key(0), 3, 50)
    assert counts.shape == (3, 50) and np.all(counts.sum(1) == 50)
    assert not np.array_equal(counts[0], counts[1])


def test_heads_resume_from_their_checkpoint(heads_run):
    _, _, _, _, workdir, result = heads_run
    config = heads_config.get_config("test")
    config.predictor_workdir = json.loads((workdir / checkpointing.CONFIG_FILE).read_text())[
        "predictor_workdir"
    ]
    again = predictor_training.train_epistemic_heads(config, workdir)
    jax.tree.map(np.testing.assert_array_equal, again["params"]["heads"], result["params"]["heads"])


def test_eval_signals_writes_auroc_json_and_histograms(heads_run, tmp_path):
    *_, workdir, _ = heads_run
    config = eval_signals_config.get_config("test")
    config.bundle = str(workdir / predictor_training.BUNDLE_FILE)
    result = evaluation.run_signal_evaluation(config, tmp_path)
    saved = json.loads((tmp_path / evaluation.AUROC_FILE).read_text())
    assert set(saved["auroc"]) == {"entropy", "energy", "max_softmax", "epistemic", "loss"}
    for values in result["auroc"].values():
        for value in values.values():
            assert 0.0 <= value <= 1.0
    assert (tmp_path / evaluation.HISTOGRAM_FILE).stat().st_size > 1000
