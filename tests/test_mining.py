"""The mining loop end to end on tiny random models and real Fashion-MNIST-LT data."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from test_ltg_sampling import stale_bundle, tiny_bundle, tiny_mode_oracle, tiny_pipeline

from ltg_jax import cli, finetune, introspection, io, mining, predictor, report, run_record
from ltg_jax.data import datasets, fashion_mnist, synthetic

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def mine_config(arg: str = "test"):
    return cli.load_config_file(ROOT / "configs" / "mine.py", arg)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine_models")
    return {
        "pipeline": tiny_pipeline(root / "pipeline"),
        "predictor": fashion_named(tiny_bundle(root / "bundle.msgpack")),
        "oracle": fashion_named(tiny_bundle(root / "oracle.msgpack", heads=False)),
    }


def fashion_named(bundle):
    """The tiny bundle with Fashion-MNIST's class names: the loop fine-tunes on that data."""
    b = predictor.load_predictor_bundle(bundle)
    meta = {**b.metadata, "classes": list(fashion_mnist.CLASS_NAMES)}
    return predictor.save_predictor_bundle(bundle, b.predictor, b.params, b.heads, meta)


def config_for(models, **overrides):
    config = mine_config("test")
    config.pipeline, config.predictor, config.oracle = (
        str(models["pipeline"]),
        str(models["predictor"]),
        str(models["oracle"]),
    )
    config.update_from_flattened_dict(overrides)
    return config


@pytest.fixture(scope="module")
def finished(models, tmp_path_factory):
    """One full run of the test variant (the expensive part, shared by the tests below)."""
    workdir = tmp_path_factory.mktemp("mine")
    out = mining.run_mining(config_for(models), workdir)
    return workdir, out


# ---------------------------------------------------------------- the whole loop


def test_report_has_every_arm_seed_and_file(finished):
    workdir, out = finished
    saved = io.read_json(workdir / mining.REPORT_JSON)
    # Strict JSON (a class the LTG arm has no samples of has fidelity null, not NaN).
    json.loads((workdir / mining.REPORT_JSON).read_text(), parse_constant=pytest.fail)
    assert saved["seeds"] == [0, 1, 2]
    assert set(saved["arms"]) == {"real", "unguided", "ltg"}
    for arm, a in saved["arms"].items():
        for g in ("many", "medium", "few", "overall"):
            assert 0.0 <= a[g]["mean"] <= 1.0 and a[g]["std"] >= 0.0
            per_seed = [s[g] for s in a["per_seed"]]
            assert a[g]["mean"] == pytest.approx(np.mean(per_seed))
        if arm == "real":
            assert a["label_fidelity"] is None
        else:
            assert 0.0 <= a["label_fidelity"] <= 1.0
    assert saved["wall_time_s"] > 0
    # Test variant: 2 samples for each of the 3 few-shot classes, per synthetic arm.
    assert saved["images_generated"] == 12
    assert saved["synthetic"]["ltg"]["generated"] == 6
    for name in ("report.md", "accuracy_groups.png", "accuracy_per_class.png",
                 "label_fidelity.png", "hardest_ltg.png"):  # fmt: skip
        assert (workdir / name).is_file(), name
    sheets = sorted(p.name for p in (workdir / "clusters").glob("*.png"))
    assert sheets and {c["sheet"].split("/")[1] for c in saved["clusters"]} == set(sheets)
    assert sum(c["size"] for c in saved["clusters"]) == 6  # every hardest sample in one cluster
    for arm in ("real", "unguided", "ltg"):
        for seed in (0, 1, 2):
            ev = io.read_json(workdir / "finetune" / arm / f"seed_{seed}" / finetune.EVAL_FILE)
            assert ev["train"]["num_synthetic"] == (0 if arm == "real" else 6)
    md = (workdir / "report.md").read_text()
    assert "| ltg |" in md and "Filtering:" in md and "k-means" in md
    # Per class: the accuracies behind the groups and the synthetic data behind them.
    diagnostics = saved["per_class_diagnostics"]
    assert [r["class"] for r in diagnostics] == list(fashion_mnist.CLASS_NAMES)
    for r in diagnostics:
        k = fashion_mnist.CLASS_NAMES.index(r["class"])
        assert r["group"] == next(g for g, ks in fashion_mnist.GROUPS.items() if k in ks)
        assert r["accuracy_ltg"] == saved["arms"]["ltg"]["per_class"][r["class"]]["mean"]
        assert r["ltg_minus_unguided"] == pytest.approx(r["accuracy_ltg"] - r["accuracy_unguided"])
        assert r["kept_ltg"] == saved["synthetic"]["ltg"]["kept_per_class"][r["class"]]
        # Where the class's errors go, averaged over runs: shares no larger than its error.
        lost = sum(r["confused_with_ltg"].values())
        assert r["class"] not in r["confused_with_ltg"] and len(r["confused_with_ltg"]) <= 2
        assert lost <= 1.0 - r["accuracy_ltg"] + 1e-9
        if k in fashion_mnist.GROUPS["few"]:  # the only classes the test variant generates
            assert r["kept_ltg"] == 2 and r["fidelity_ltg"] is not None
        else:
            assert r["relative_ink_ltg"] is None and r["fidelity_ltg"] is None
    by_name = {r["class"]: r for r in diagnostics}
    assert by_name["Sneaker"]["relative_ink_ltg"] > 0 and by_name["Bag"]["relative_ink_ltg"] > 0
    assert "## Per class: where LTG data helps and hurts" in md and "errors go to |" in md


def test_unguided_arm_has_same_plan_and_seed_with_w0(finished):
    workdir, _ = finished
    ltg = synthetic.read_rows(workdir / "synthetic" / "ltg" / "data")
    ung = synthetic.read_rows(workdir / "synthetic" / "unguided" / "data")
    assert [(r["index"], r["class_id"], r["seed"]) for r in ltg] == [
        (r["index"], r["class_id"], r["seed"]) for r in ung
    ]
    assert {r["w"] for r in ung} == {0.0} and {r["w"] for r in ltg} == {2.0}
    # `guidance` names the signal each arm followed.
    assert {r["guidance"] for r in ung} == {"none"} and {r["guidance"] for r in ltg} == {"entropy"}
    # The guided arm really is guided: same noise, different images.
    root = workdir / "synthetic"
    diffs = [
        np.abs(
            io.load_png(root / "ltg" / "data" / r["file_name"]).astype(int)
            - io.load_png(root / "unguided" / "data" / r["file_name"]).astype(int)
        ).max()
        for r in ltg
    ]
    assert max(diffs) > 0
    assert {r["class_id"] for r in ltg} == set(fashion_mnist.GROUPS["few"])


def test_rerun_resumes_without_redoing_finished_stages(models, finished):
    workdir, out = finished
    again = mining.run_mining(config_for(models), workdir)
    assert not [s for s in again["stages_run_this_time"] if s.startswith(("generate", "finetune"))]
    for arm in out["arms"]:
        assert again["arms"][arm]["overall"] == out["arms"][arm]["overall"]
    # A changed report key is free; a changed fine-tuning key is another run.
    mining.run_mining(config_for(models, **{"report.clusters": 1}), workdir)
    with pytest.raises(ValueError, match="another config.*finetune.num_steps.*new --workdir"):
        mining.run_mining(config_for(models, **{"finetune.num_steps": 5}), workdir)
    # A run that predates a setting (its config.json lacks the key) resumes under it.
    record = json.loads((workdir / "config.json").read_text())
    del record["config"]["baselines"]
    (workdir / "config.json").write_text(json.dumps(record))
    mining.run_mining(config_for(models), workdir)
    assert "baselines" in json.loads((workdir / "config.json").read_text())["config"]


def test_baseline_arms_join_a_finished_run(models, finished, tmp_path):
    """Class-balanced and logit-adjusted arms added on a rerun: only they are fine-tuned."""
    import shutil

    workdir = tmp_path / "mine"
    shutil.copytree(finished[0], workdir)
    arms = "real,real+balanced,real+logit_adjusted,unguided,ltg,ltg+logit_adjusted"
    out = mining.run_mining(config_for(models, arms=tuple(arms.split(","))), workdir)
    ran = {s.rsplit("/", 1)[0] for s in out["stages_run_this_time"] if s.startswith("finetune")}
    assert ran == {"finetune/real+balanced", "finetune/real+logit_adjusted",
                   "finetune/ltg+logit_adjusted"}  # fmt: skip
    assert out["arm_order"] == arms.split(",")
    for arm in ("real", "unguided", "ltg"):  # reused, not retrained
        assert out["arms"][arm]["overall"] == finished[1]["arms"][arm]["overall"]
    assert (
        out["arms"]["ltg+logit_adjusted"]["label_fidelity"] == out["arms"]["ltg"]["label_fidelity"]
    )
    best = out["kpis"]["few_shot_gain_vs_best_baseline"]
    assert best["baseline"] in ("real+balanced", "real+logit_adjusted")
    lines = mining.headline(out, workdir).splitlines()
    assert [ln.split()[0] for ln in lines[-6:]] == arms.split(",")
    assert "LTG vs the best baseline" in (workdir / "report.md").read_text()
    with pytest.raises(ValueError, match="'ltg\\+focal' is not an arm"):
        mining.run_mining(config_for(models, arms=("real", "ltg+focal")), workdir)


def test_a_second_generation_seed_spreads_the_synthetic_arms(models, finished, tmp_path):
    """Generation seed 1 added to a finished run: only its generation and fine-tuning run;
    the synthetic arms then aggregate 2 x 3 runs, `real` still its 3, and the KPI pairs the
    LTG and unguided gains by generation seed."""
    import shutil

    workdir = tmp_path / "mine"
    shutil.copytree(finished[0], workdir)
    out = mining.run_mining(config_for(models, generation_seeds=(0, 1)), workdir)
    ran = {s.rsplit("/", 1)[0] for s in out["stages_run_this_time"]}
    assert {"generate", "finetune/ltg_gen1", "finetune/unguided_gen1"} <= ran
    assert not ran & {"finetune/real", "finetune/ltg", "finetune/unguided"}
    assert "generate/ltg_gen1" in out["stages_run_this_time"]
    first = synthetic.load_synthetic(workdir / "synthetic/ltg/data")
    second = synthetic.load_synthetic(workdir / "synthetic/ltg_gen1/data")
    assert [r["class_name"] for r in first.rows] == [r["class_name"] for r in second.rows]
    assert np.abs(first.images - second.images).max() > 0.1  # another noise draw
    assert out["generation_seeds"] == [0, 1]
    assert out["arms"]["ltg"]["few"]["n"] == 6 and out["arms"]["real"]["few"]["n"] == 3
    assert set(out["arms"]["ltg"]["per_generation"]) == {"0", "1"}
    assert "per_generation" not in out["arms"]["real"]
    gen0 = out["arms"]["ltg"]["per_generation"]["0"]["few"]
    assert gen0 == pytest.approx(finished[1]["arms"]["ltg"]["few"]["mean"])
    gains = out["kpis"]["few_shot_gain_vs_unguided"]["per_generation"]
    assert np.mean(list(gains.values())) == pytest.approx(
        out["kpis"]["few_shot_gain_vs_unguided"]["gain"]
    )
    text = (workdir / "report.md").read_text()
    assert "per generation seed:" in text and "| ltg | std |" in text
    assert "6 runs each" in out["verdict"]


def test_class_balanced_batches_draw_every_class_equally():
    labels = np.repeat(np.arange(3), [900, 90, 10]).astype(np.int32)
    real = {"image": np.zeros((1000, 2, 2, 1), np.float32), "label": labels}
    empty = {"image": real["image"][:0], "label": labels[:0]}
    draw = lambda balanced: np.concatenate([
        finetune.mixed_batch(real, empty, step, seed=0, batch_size=64, synthetic_fraction=0.25,
                             augment=False, class_balanced=balanced)["label"]
        for step in range(50)
    ])  # fmt: skip
    balanced = np.bincount(draw(True), minlength=3) / 3200
    uniform = np.bincount(draw(False), minlength=3) / 3200
    np.testing.assert_allclose(balanced, [1 / 3] * 3, atol=0.03)
    np.testing.assert_allclose(uniform, [0.9, 0.09, 0.01], atol=0.02)


def test_synthetic_class_balanced_draws_every_kept_class_equally_and_leaves_real_rows():
    """Only the synthetic rows change: the real rows of each batch are the uniform draw's."""
    real = {"image": np.zeros((100, 2, 2, 1), np.float32), "label": np.zeros(100, np.int32)}
    labels = np.repeat(np.arange(1, 4), [80, 15, 5]).astype(np.int32)
    syn = {"image": np.zeros((100, 2, 2, 1), np.float32), "label": labels}
    balanced_weights = finetune.synthetic_row_weights(None, syn, "class_balanced", 64)
    batches = lambda balanced: [
        finetune.mixed_batch(real, syn, step, seed=0, batch_size=64, synthetic_fraction=0.5,
                             augment=False,
                             synthetic_weights=balanced_weights if balanced else None)["label"]
        for step in range(50)
    ]  # fmt: skip
    balanced, uniform = batches(True), batches(False)
    for b, u in zip(balanced, uniform, strict=True):
        np.testing.assert_array_equal(b[:32], u[:32])  # the real rows come first
    share = lambda bs: np.bincount(np.concatenate([b[32:] for b in bs]), minlength=4) / 1600
    np.testing.assert_allclose(share(balanced), [0, 1 / 3, 1 / 3, 1 / 3], atol=0.04)
    np.testing.assert_allclose(share(uniform), [0, 0.8, 0.15, 0.05], atol=0.03)
    train = {"batch_size": 64, "synthetic_fraction": 0.5, "synthetic_sampling": "class_balanced"}
    prior = finetune.training_prior(real["label"], labels, 4, train)
    np.testing.assert_allclose(prior, [0.5, 1 / 6, 1 / 6, 1 / 6])


def test_logit_adjusted_loss_uses_the_prior_of_the_batches():
    """Offsets are tau * log of the real + synthetic share prior; the loss adds them."""
    import optax

    from ltg_jax import predictor_training, signals

    real = {"label": np.asarray([0] * 8 + [1] * 2, np.int32)}
    syn = {"label": np.asarray([2, 2], np.int32)}
    train = {"batch_size": 8, "synthetic_fraction": 0.25, "logit_adjustment_tau": 1.0}
    # 6 real rows (0.8 / 0.2 of classes 0 / 1) and 2 synthetic rows (class 2) per batch.
    prior = finetune.training_prior(real["label"], syn["label"], 4, train)
    np.testing.assert_allclose(prior, [0.6, 0.15, 0.25, 0.0])
    offsets = finetune.logit_offsets(real, syn, 4, train)
    np.testing.assert_allclose(offsets[:3], np.log([0.6, 0.15, 0.25]), rtol=1e-6)
    assert finetune.logit_offsets(real, syn, 4, {**train, "logit_adjustment_tau": 0.0}) is None

    logits = np.asarray([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4]], np.float32)
    apply_fn = lambda params, images: (images, images + params["b"])  # logits = images + b
    state = {"params": {"b": np.zeros(4, np.float32)}, "step": 0}
    state["opt_state"] = optax.sgd(0.0).init(state["params"])
    step = predictor_training.make_train_step(apply_fn, optax.sgd(0.0), offsets)
    labels = np.asarray([1, 3], np.int32)
    _, metrics = step(state, {"image": logits, "label": labels})
    expected = np.mean(signals.cross_entropy(logits + offsets, labels))
    np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-6)
    assert float(metrics["loss"]) != pytest.approx(
        float(np.mean(signals.cross_entropy(logits, labels)))
    )


def test_headline_lists_three_arms(finished):
    workdir, out = finished
    text = mining.headline(out, workdir)
    assert text.startswith(f"report: {workdir / 'report.md'}")
    lines = text.splitlines()
    assert [ln.split()[0] for ln in lines[-3:]] == ["real", "unguided", "ltg"]
    assert "±" in lines[-1]


@pytest.mark.slow
def test_selection_sweeps_candidates_on_validation_only(models, tmp_path):
    modes = tiny_mode_oracle(tmp_path / "modes.msgpack")
    config = config_for(models, **{"eval.split": "validation", "report.mode_oracle": str(modes)})
    config.seeds = (0,)
    with pytest.raises(ValueError, match="validation, never test"):
        mining.run_selection(config_for(models), tmp_path / "refused")
    out = mining.run_selection(config, tmp_path / "select")
    assert set(out["candidates"]) == {"real", "unguided", "w1", "w2_entropy", "w1_half"}
    assert out["best"] in ("w1", "w2_entropy", "w1_half")
    best = out["candidates"][out["best"]]["validation"]
    for name in ("w1", "w2_entropy", "w1_half"):
        assert mining.selection_key(out["candidates"][name]["validation"]) <= (
            mining.selection_key(best)
        )
    assert out["candidates"]["w2_entropy"]["overrides"] == {
        "signal": "entropy",
        "sampler.guidance.w": 2.0,
    }
    rows = synthetic.read_rows(tmp_path / "select" / "candidates" / "w2_entropy" / "data")
    assert {r["guidance"] for r in rows} == {"entropy"} and {r["w"] for r in rows} == {2.0}
    assert io.read_json(tmp_path / "select" / mining.SELECTION_JSON)["best"] == out["best"]
    # w1_half changes only the mix: it fine-tunes on w1's samples, drawn once.
    candidates = tmp_path / "select" / "candidates"
    assert not (candidates / "w1_half" / "data").exists()
    assert out["candidates"]["w1_half"]["kept"] == out["candidates"]["w1"]["kept"]
    assert out["candidates"]["w1_half"]["overrides"]["finetune.synthetic_fraction"] == 0.5
    losses = [
        io.read_json(candidates / name / "finetune" / "run" / "seed_0" / finetune.EVAL_FILE)[
            "train"
        ]["final_loss"]
        for name in ("w1", "w1_half")
    ]
    assert losses[0] != losses[1]  # the same samples, mixed in another share
    # Each synthetic candidate records the mode oracle's shares, generated and kept.
    for name in ("unguided", "w1", "w2_entropy"):
        shares = out["candidates"][name]["modes"]
        assert set(shares) == {"generated", "kept"}
        assert sum(shares["generated"].values()) == pytest.approx(1.0)
    assert out["candidates"]["real"]["modes"] == {}


def test_world_val_is_the_benchmark_on_validation_and_nothing_else():
    world, val = (run_record.plain(mine_config(v)) for v in ("world", "world_val"))
    assert run_record.differences(world, val) == [
        "arms: ['real', 'real+balanced', 'real+logit_adjusted', 'unguided', 'ltg', "
        "'ltg+logit_adjusted'] -> ['real', 'unguided', 'ltg']",
        "eval.split: 'test' -> 'validation'",
        "seeds: [0, 1, 2] -> [0, 1]",
        "variant: 'world' -> 'world_val'",
    ]


def test_candidates_change_sampling_mix_or_filter_and_misspelt_keys_are_refused():
    config = mine_config("world_select")
    for variant in ("world_select", "world_select_review"):
        for candidate in mine_config(variant).select.candidates:  # every shipped one builds
            mining.candidate_config(config, candidate)
    picked = mining.candidate_config(
        config,
        {"name": "mix", "sampler.guidance.end": 0.4, "finetune.synthetic_fraction": 0.5,
         "review.oracle_min_prob": 0.9},
    )  # fmt: skip
    assert picked.ltg.sampler.guidance.end == 0.4
    assert (picked.finetune.synthetic_fraction, picked.review.oracle_min_prob) == (0.5, 0.9)
    assert config.finetune.synthetic_fraction == 0.25  # the sweep's own config is untouched
    with pytest.raises(ValueError, match=r"unknown keys \['sampler.guidance.ed', 'finetune.lr'\]"):
        mining.candidate_config(
            config, {"name": "typo", "sampler.guidance.ed": 0.4, "finetune.lr": 1e-3}
        )


# ---------------------------------------------------------------- review and bad input


def test_manifest_and_oracle_filter(models, finished, tmp_path):
    workdir, _ = finished
    data = workdir / "synthetic" / "ltg" / "data"
    rows = synthetic.read_rows(data)
    manifest = tmp_path / "reviewed.json"
    manifest.write_text(json.dumps({"reject": [rows[0]["file_name"], rows[1]["file_name"]]}))
    config = config_for(models, **{"review.manifest.ltg": str(manifest)})
    config.review.oracle_filter = True
    inputs = mining.check_inputs(config)
    arm = mining.review(config, "ltg", data, inputs)
    assert arm.summary["rejected_by_manifest"] == 2
    assert not arm.keep[:2].any()
    kept = arm.summary["kept"]
    assert kept == arm.keep.sum() == len(arm.training_arrays()["label"])
    assert kept == 6 - 2 - arm.summary["rejected_by_oracle"]

    labels = np.array([0, 1, 2])
    probs = np.array([[0.6, 0.4, 0.0], [0.7, 0.25, 0.05], [0.5, 0.1, 0.4]])
    np.testing.assert_array_equal(mining.oracle_keep(labels, probs, 0.3), [True, False, True])
    # The stricter filter also drops the third sample, which tau alone kept (p = 0.4).
    np.testing.assert_array_equal(
        mining.oracle_keep(labels, probs, 0.3, min_prob=0.55), [True, False, False]
    )
    config.review.oracle_min_prob = 1.5
    with pytest.raises(ValueError, match=r"review.oracle_min_prob=1.5: give a probability"):
        mining.check_inputs(config)

    # Mining's own filter: only the samples the predictor gives their class < max_predictor_prob.
    config.review.oracle_min_prob, config.review.oracle_filter = 0.0, False
    listed = mining.review(config, "ltg", data, inputs)
    probs = mining.oracle_probs(inputs.bundle, listed.images, 64)
    p_class = probs[np.arange(len(listed.labels)), listed.labels]
    config.review.max_predictor_prob = float(np.median(p_class[listed.keep]))
    hard = mining.review(config, "ltg", data, inputs)
    easy = listed.keep & (p_class >= config.review.max_predictor_prob)
    np.testing.assert_array_equal(hard.keep, listed.keep & ~easy)
    assert hard.summary["rejected_as_easy"] == easy.sum() > 0
    config.review.max_predictor_prob = 1.5
    with pytest.raises(ValueError, match=r"review.max_predictor_prob=1.5: give a probability"):
        mining.check_inputs(config)


def test_manifest_naming_unknown_files_is_refused(models, finished, tmp_path):
    workdir, _ = finished
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(["009_ankle_boot/9999999.png"]))
    config = config_for(models, **{"review.manifest.ltg": str(manifest)})
    fresh = tmp_path / "fresh"  # checked against the planned files before anything is generated
    with pytest.raises(ValueError, match="review.manifest.ltg: .*not in the dataset.*file_name"):
        mining.run_mining(config, fresh)
    assert not fresh.exists()
    missing = config_for(models, **{"review.manifest.ltg": str(tmp_path / "none.json")})
    with pytest.raises(FileNotFoundError, match="review.manifest.ltg"):
        mining.check_inputs(missing)


def test_dataset_of_another_class_list_is_refused(models, tmp_path):
    data = tmp_path / "foreign"
    row = synthetic.sample_row(
        index=0, class_id=3, class_name="cat", label="cat", seed=0, guidance="x", w=1.0,
        signals={"guidance": 0.1}, model_hash="m", predictor_hash="p",
    )  # fmt: skip
    synthetic.write_sample(data, np.zeros((32, 32, 1)), row, data / synthetic.METADATA_FILE)
    config = config_for(models, **{"synthetic.ltg": str(data)})
    with pytest.raises(ValueError, match=r"another class list: \[\(3, 'cat'\)\].*regenerate"):
        mining.review(config, "ltg", data, mining.check_inputs(config))


def test_oracle_of_other_classes_or_stale_is_refused(models, tmp_path):
    five = tiny_bundle(tmp_path / "five.msgpack", heads=False, num_classes=5)
    with pytest.raises(ValueError, match=r"--config.oracle: its classes \['item 0', .*'item 4'\] "
                       r"are not the dataset's \['T-shirt/top'"):  # fmt: skip
        mining.check_inputs(config_for(models, oracle=str(five)))
    stale = fashion_named(stale_bundle(tmp_path / "stale.msgpack"))
    with pytest.raises(ValueError, match=r"--config.oracle: .* does not run on the dataset's "
                       r"\(32, 32, 1\) images"):  # fmt: skip
        mining.check_inputs(config_for(models, oracle=str(stale)))


# ---------------------------------------------------------------- fine-tuning


def test_finetune_resumes_to_the_same_params(models, tmp_path):
    bundle = predictor.load_predictor_bundle(models["predictor"])
    rng = np.random.default_rng(0)
    real = {"image": rng.uniform(-1, 1, (20, 32, 32, 1)).astype(np.float32),
            "label": rng.integers(0, 10, 20).astype(np.int32)}  # fmt: skip
    syn = {"image": real["image"][:5], "label": real["label"][:5]}
    train = mine_config("test").finetune.to_dict()
    straight, _ = finetune.finetune(bundle, real, syn, train, 0, tmp_path / "a")
    _, info = finetune.finetune(bundle, real, syn, train, 0, tmp_path / "b", stop_after_steps=2)
    assert not info["finished"]
    resumed, info = finetune.finetune(bundle, real, syn, train, 0, tmp_path / "b")
    assert info["resumed_from_step"] == 2 and info["steps_this_run"] == 2
    for x, y in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_predictor_loss_draws_what_the_predictor_gets_wrong_most(models, tmp_path):
    """Rows are drawn in proportion to the predictor's loss on their class, and the logit
    adjustment's prior follows the same draw."""
    from ltg_jax import predictor_training

    bundle = predictor.load_predictor_bundle(models["predictor"])
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (6, 32, 32, 1)).astype(np.float32)
    logits = predictor_training.predict(bundle.adapted_apply, bundle.params["predictor"], images,
                                        6)["logits"]  # fmt: skip
    order = np.argsort(logits[0])  # image 0 labelled with its least and its most likely class
    labels = np.asarray([order[0], order[-1], 1, 2, 3, 4], np.int32)
    syn = {"image": images, "label": labels}
    weights = finetune.synthetic_row_weights(bundle, syn, "predictor_loss", 4)
    loss = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), labels[:, None], -1)[:, 0]
    np.testing.assert_allclose(weights, loss / loss.sum(), rtol=1e-5)
    assert weights[0] > weights[1]
    real = {"image": images[:2], "label": np.zeros(2, np.int32)}
    draws = np.concatenate([
        finetune.mixed_batch(real, syn, step, seed=0, batch_size=8, synthetic_fraction=1.0,
                             augment=False, synthetic_weights=weights)["image"][:, 0, 0, 0]
        for step in range(400)
    ])  # fmt: skip
    share = np.asarray([(draws == images[i, 0, 0, 0]).mean() for i in range(6)])
    np.testing.assert_allclose(share, weights, atol=0.02)
    train = {"batch_size": 8, "synthetic_fraction": 1.0, "synthetic_sampling": "predictor_loss"}
    prior = finetune.training_prior(real["label"], labels, 10, train, weights)
    np.testing.assert_allclose(prior, np.bincount(labels, weights, minlength=10), rtol=1e-6)
    with pytest.raises(ValueError, match="needs the rows' synthetic_weights"):
        finetune.training_prior(real["label"], labels, 10, train)
    with pytest.raises(ValueError, match="finetune.sampling='predictor_loss'"):
        finetune.finetune(bundle, real, syn, {**train, "sampling": "predictor_loss"}, 0, tmp_path)


def test_mixed_batch_share_and_determinism():
    real = {"image": np.zeros((10, 4, 4, 1), np.float32), "label": np.zeros(10, np.int32)}
    syn = {"image": np.ones((3, 4, 4, 1), np.float32), "label": np.full(3, 7, np.int32)}
    a = finetune.mixed_batch(real, syn, 5, seed=1, batch_size=8, synthetic_fraction=0.25,
                             augment=False)  # fmt: skip
    b = finetune.mixed_batch(real, syn, 5, seed=1, batch_size=8, synthetic_fraction=0.25,
                             augment=False)  # fmt: skip
    assert (a["label"] == 7).sum() == 2 and a["image"].shape == (8, 4, 4, 1)
    np.testing.assert_array_equal(a["image"], b["image"])
    empty = {"image": syn["image"][:0], "label": syn["label"][:0]}
    assert finetune.batch_split(8, 0.25, 0) == (8, 0)
    only_real = finetune.mixed_batch(real, empty, 5, seed=1, batch_size=8, synthetic_fraction=0.25)
    assert (only_real["label"] == 0).all()


# ---------------------------------------------------------------- small pure pieces


def test_class_budget_tops_up_the_tail():
    config = mine_config("default")
    data = datasets.describe(config.data)
    budget = mining.class_budget(config, data)
    for k in fashion_mnist.GROUPS["few"]:
        assert budget[k] == config.budget.few
    assert budget[0] == config.budget.many and config.budget.few > config.budget.medium
    config.budget.per_class = (5,)
    assert mining.class_budget(config, data) == (5,) * 10


def test_hardest_and_clusters(tmp_path):
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.9, np.nan, 0.5, 0.7])
    hard = introspection.hardest_indices(labels, scores, 2)
    assert hard[0].tolist() == [1, 0] and hard[1].tolist() == [4, 3]
    features = np.array([[0.0], [10.0], [0.1], [5.0], [5.1]])
    assign = introspection.cluster_features(features[[0, 1, 2]], 2)
    assert assign[0] == assign[2] != assign[1]
    images = np.zeros((5, 8, 8, 1), np.float32)
    clusters = introspection.cluster_hardest(
        images, features, labels, scores, ["a", "b"], tmp_path / "c", per_class=3, num_clusters=2
    )
    assert sorted((c["class_id"], c["size"]) for c in clusters) == [(0, 1), (0, 2), (1, 1), (1, 1)]
    assert all((tmp_path / c["sheet"]).is_file() for c in clusters)


def test_aggregate_and_verdict():
    reps = [{"many": m, "medium": m, "few": f, "overall": m, "per_class": {"a": f}}
            for m, f in ((0.8, 0.5), (0.9, 0.7))]  # fmt: skip
    arm = report.aggregate_arm(reps)
    assert arm["few"]["mean"] == pytest.approx(0.6) and arm["few"]["std"] == pytest.approx(0.1)
    worse = report.aggregate_arm([{**r, "few": r["few"] - 0.5} for r in reps])
    assert "beats" in mining.verdict({"ltg": arm, "unguided": worse})
    assert "within the seed spread" in mining.verdict({"ltg": arm, "unguided": arm})
    assert "confused_with" not in arm  # runs evaluated before confusions were recorded
    # Confusions average over runs, a wrong class missing from a run's top counting 0 there.
    runs = [{"a": {"b": 0.2, "c": 0.1}}, {"a": {"c": 0.3}}, {"a": {"d": 0.05, "b": 0.1}}]
    with_runs = [r | {"confused_with": c} for r, c in zip(reps + reps[:1], runs, strict=True)]
    averaged = report.aggregate_arm(with_runs)
    assert averaged["confused_with"]["a"] == pytest.approx({"c": 0.4 / 3, "b": 0.1})


def test_entrypoint_defaults_to_the_mine_config():
    from sample import mine

    assert Path(mine.DEFAULT_CONFIG) == ROOT / "configs" / "mine.py"
    for variant in ("default", "select", "test"):
        config = mine_config(variant)
        assert config.eval.split == ("validation" if variant == "select" else "test")
        assert len(config.seeds) >= 2


def test_shifted_test_sets_and_a_mode_oracle_join_a_finished_run(models, finished, tmp_path):
    """Shifts added to a finished run: every fine-tuned run is evaluated on them from its
    checkpoint (no training); a mode oracle adds the rare mode's share per generated set."""
    import shutil

    workdir = tmp_path / "mine"
    shutil.copytree(finished[0], workdir)
    # A run evaluated before reports said where errors go gains them from its checkpoint.
    old_eval = workdir / "finetune/unguided/seed_1" / finetune.EVAL_FILE
    before = io.read_json(old_eval)
    io.atomic_write_json(old_eval, {**before, "test": {
        k: v for k, v in before["test"].items() if k != "confused_with"}})  # fmt: skip
    modes = tiny_mode_oracle(tmp_path / "modes.msgpack")
    config = config_for(models, **{"eval.shifts": ("rotate90", "noise"),
                                   "report.mode_oracle": str(modes)})  # fmt: skip
    out = mining.run_mining(config, workdir)
    assert not [s for s in out["stages_run_this_time"] if s.startswith("generate")]
    for arm in ("real", "unguided", "ltg"):  # the clean results are the finished ones
        assert out["arms"][arm]["overall"] == finished[1]["arms"][arm]["overall"]
    assert io.read_json(old_eval)["test"] == before["test"]  # the same figures, from the checkpoint
    evals = io.read_json(workdir / "finetune/ltg/seed_0" / finetune.EVAL_FILE)
    assert {"test", "test+rotate90", "test+noise", "train"} <= set(evals)
    assert evals["train"]["steps_this_run"] > 0  # the original training record is kept
    shifted = out["shifted"]["rotate90"]
    assert shifted["split"] == "test+rotate90" and set(shifted["arms"]) == set(out["arms"])
    per_seed = [r["overall"] for r in shifted["arms"]["ltg"]["per_seed"]]
    assert shifted["arms"]["ltg"]["overall"]["mean"] == pytest.approx(np.mean(per_seed))
    gain = out["kpis"]["shift_gain_vs_unguided"]["noise"]
    assert gain["gain"] == pytest.approx(
        out["shifted"]["noise"]["arms"]["ltg"]["overall"]["mean"]
        - out["shifted"]["noise"]["arms"]["unguided"]["overall"]["mean"]
    )
    for name, s in out["synthetic"].items():
        shares = s["modes"]["generated"]
        assert sum(shares.values()) == pytest.approx(1.0)
        assert out["modes"]["rare_rate"][name]["generated"] == shares["rotated"]
    rate = out["kpis"]["rare_mode_rate"]
    assert rate["mode"] == "rotated" and 0 <= rate["ltg"] <= 1
    assert "isolation" in out["modes"]
    text = (workdir / "report.md").read_text()
    assert "## Shifted test sets" in text and "| ltg |" in text and "test+rotate90, LTG" in text
    assert "The rare mode (rotated)" in text and "Share of the rare mode per class" in text
    per_class = out["modes"]["rare_rate_per_class"]
    assert set(per_class) == set(out["synthetic"])
    for k in fashion_mnist.GROUPS["few"]:  # the test variant generates the few-shot classes
        name = fashion_mnist.CLASS_NAMES[k]
        assert (
            per_class["ltg"][name] == out["synthetic"]["ltg"]["modes"]["per_class"][name]["rotated"]
        )
    with pytest.raises(ValueError, match="unknown shift"):
        mining.run_mining(config_for(models, **{"eval.shifts": ("blur",)}), workdir)
    with pytest.raises(ValueError, match="rare_mode='sideways'"):
        mining.run_mining(
            config_for(models, **{"report.mode_oracle": str(modes),
                                  "report.rare_mode": "sideways"}), workdir,
        )  # fmt: skip


def test_mode_isolation_scores_the_cluster_richest_in_the_mode():
    clusters = [
        {"class_id": 0, "class_name": "a", "cluster": 0, "size": 3, "rows": [0, 1, 2]},
        {"class_id": 0, "class_name": "a", "cluster": 1, "size": 2, "rows": [3, 4]},
        {"class_id": 1, "class_name": "b", "cluster": 0, "size": 2, "rows": [5, 6]},
    ]
    is_rare = np.array([1, 0, 0, 1, 1, 0, 0], bool)
    iso = introspection.mode_isolation(clusters, is_rare)
    a, b = iso["per_class"]
    assert (a["cluster"], a["precision"], a["recall"], a["base_rate"]) == (1, 1.0, 2 / 3, 0.6)
    assert b["recall"] is None and b["base_rate"] == 0.0
    assert iso["mean_precision"] == pytest.approx(0.5) and iso["mean_recall"] == 2 / 3


# ---------------------------------------------------------------- data efficiency


def test_budget_curve_adds_scales_around_a_finished_run(models, finished, tmp_path):
    """The finished run is the 1x point; the 0.5x run generates half the samples, fine-tunes
    only the synthetic arms, and the curve pairs each arm's kept images with its accuracy."""
    import shutil

    from ltg_jax import budget_curve

    workdir = tmp_path / "curve"
    shutil.copytree(finished[0], workdir / "x1")
    config = config_for(models, **{"curve.scales": (1.0, 0.5)})  # 0.5x: 1 per few-shot class
    summary = budget_curve.run_budget_curve(config, workdir)
    half = io.read_json(workdir / "x0.5" / mining.REPORT_JSON)
    assert half["synthetic"]["ltg"]["generated"] == 3 and "real" not in half["arms"]
    assert not (workdir / "x0.5" / "finetune" / "real").exists()
    assert summary["split"] == "test" and summary["group"] == "few"
    assert summary["real"] == finished[1]["arms"]["real"]["few"]
    for arm in ("unguided", "ltg"):
        points = summary["points"][arm]
        assert [p["scale"] for p in points] == [0.5, 1.0]
        assert points[0]["images"] == half["synthetic"][arm]["kept"]
        assert points[0]["mean"] == half["arms"][arm]["few"]["mean"]
        assert points[1]["mean"] == finished[1]["arms"][arm]["few"]["mean"]
    assert "unguided_images_to_match_ltg_1x" in summary
    assert (workdir / budget_curve.CURVE_PNG).is_file()
    assert "| ltg | 0.5x |" in (workdir / budget_curve.CURVE_MD).read_text()
    with pytest.raises(ValueError, match="including 1"):
        budget_curve.check_curve(config_for(models, **{"curve.scales": (0.5, 2.0)}))
    with pytest.raises(ValueError, match="is not evaluated by this run"):
        budget_curve.check_curve(config_for(models, **{"curve.split": "test+noise"}))


def test_images_to_match_interpolates_between_measured_budgets():
    from ltg_jax.budget_curve import images_to_match

    points = [{"images": 10, "mean": 0.5}, {"images": 20, "mean": 0.7},
              {"images": 40, "mean": 0.8}]  # fmt: skip
    assert images_to_match(points, 0.6) == pytest.approx(15.0)
    assert images_to_match(points, 0.75) == pytest.approx(30.0)
    assert images_to_match(points, 0.4) == 10  # the smallest budget already reaches it
    assert images_to_match(points, 0.9) is None  # no measured budget does


def test_filter_sweep_tool_rebuilds_the_documented_table_from_the_shipped_reports(tmp_path):
    import runpy

    val4x = ROOT / "docs" / "world" / "val4x"
    tool = runpy.run_path(str(ROOT / "tools" / "plot_filter_sweep.py"))
    tool["main"](str(tmp_path), "validation+rotate90",
                 [f"{p}={val4x / f'report_{name}.json'}"
                  for p, name in (("0.05", "p005"), ("0.1", "p01"), ("1", "p1"))])  # fmt: skip
    table = (tmp_path / "filter_sweep.md").read_text()
    assert table == (val4x / "filter_sweep.md").read_text()
    assert "| 0.05 | ltg | 83 | 0.3797 ± 0.0338 | 0.423, 0.347, 0.368 |" in table
    assert (tmp_path / "filter_sweep.png").stat().st_size > 0


def test_mode_shares_leave_unscored_classes_out_of_the_overall_share():
    from ltg_jax import evaluation

    labels = np.array([0, 0, 1, 1, 2, 2])
    modes = np.array([0, 1, 1, 1, 0, 0])  # class 1 is always called rotated
    keep = np.array([True, True, True, False, True, False])
    names = ("a", "b", "c")
    shares = evaluation.mode_shares(modes, labels, keep, ("upright", "rotated"), names, ("b",))
    assert shares["generated"]["rotated"] == pytest.approx(1 / 4)  # classes a and c only
    assert shares["kept"]["rotated"] == pytest.approx(1 / 3)
    assert shares["per_class"]["b"]["rotated"] == 1.0  # still reported per class
    assert shares["unscored_classes"] == ["b"]
    every = evaluation.mode_shares(modes, labels, keep, ("upright", "rotated"), names)
    assert every["generated"]["rotated"] == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match=r"names \['Bag'\], which are not classes"):
        evaluation.mode_shares(modes, labels, keep, ("upright", "rotated"), names, ("Bag",))
