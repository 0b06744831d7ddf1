"""The guidance study: every setting from the same plan, measured side by side."""

import jax
import numpy as np
import pytest
from test_ltg_sampling import (
    CLASS_NAMES,
    load_config,
    tiny_bundle,
    tiny_mode_oracle,
    tiny_pipeline,
)

from ltg_jax import guidance_study, io, models
from ltg_jax import tiny_decoder_training as tdt
from ltg_jax.models import vae_tiny


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    config = load_config("guidance_study", "test")
    config.ltg.pipeline = str(tiny_pipeline(root / "pipeline"))
    config.ltg.predictor = str(tiny_bundle(root / "predictor.msgpack"))
    config.oracle = str(tiny_bundle(root / "oracle.msgpack", heads=False))
    config.mode_oracle = str(tiny_mode_oracle(root / "modes.msgpack"))
    config.mode_unscored_classes = (CLASS_NAMES[8],)
    # A random tiny decoder of the test VAE's shape (3 levels, 4 latent channels, grey).
    tiny_config = tdt.tiny_config_dict(
        {"channels": (4, 4, 4), "encoder_blocks": (1, 1, 1), "decoder_blocks": (1, 1, 1),
         "latent_channels": 4}, 1,
    )  # fmt: skip
    module = vae_tiny.vae_tiny_from_config(tiny_config)
    tiny = tdt.export(root / "tiny", tiny_config, models.init_params(module, jax.random.key(0)))
    config.extra = (
        {"name": "w2_z0_tiny", "sampler.guidance.w": 2.0, "tiny_decoder": str(tiny)},
        {"name": "w2_z0_stride2", "sampler.guidance.w": 2.0, "sampler.guidance.stride": 2},
    )
    return root / "out", guidance_study.run_study(config, root / "out")


def test_study_compares_the_unguided_baseline_with_each_setting(study):
    workdir, result = study
    names = [row["setting"] for row in result["rows"]]
    assert names == ["w0", "w2_z0", "w2_z0_tiny", "w2_z0_stride2"]
    rows = {row["setting"]: row for row in result["rows"]}
    # Cost against unguided: XLA FLOPs of the run's steps (the test run has 2 steps).
    assert rows["w0"]["flops_ratio"] == 1.0 and rows["w2_z0"]["flops_ratio"] > 1.0
    assert rows["w2_z0_tiny"]["decoder"] == "tiny" and rows["w2_z0"]["decoder"] == "full"
    # A stride of 2 guides step 0 only: half the guided overhead.
    overhead = rows["w2_z0"]["flops_ratio"] - 1.0
    assert rows["w2_z0_stride2"]["flops_ratio"] == pytest.approx(1.0 + overhead / 2)
    assert all(row["wall_ratio"] > 0 for row in rows.values())
    for row in result["rows"]:
        assert row["samples"] == 10
        assert 0.0 <= row["predictor_accuracy"] <= 1.0 and 0.0 <= row["oracle_fidelity"] <= 1.0
        assert np.isfinite(row["mean_epistemic"])
        # Per class (the test plan: 10 classes x 1 sample, so each is 0 or 1): equal counts,
        # so the overall figure is the mean over classes.
        per_class = row["per_class"]
        assert len(per_class) == 10
        for metric in ("predictor_accuracy", "oracle_fidelity"):
            values = [c[metric] for c in per_class.values()]
            assert set(values) <= {0.0, 1.0}
            assert np.isclose(np.mean(values), row[metric])
        # The rare mode's share leaves out the unscored class (index 8); per class it is kept.
        rare = [c["rare_mode"] for c in per_class.values()]
        assert set(rare) <= {0.0, 1.0}
        assert np.isclose(np.mean(rare[:8] + rare[9:]), row["rare_mode_rate"])
        # Faithful rare samples are rare samples the oracle still names as their class.
        faithful = [c["faithful_rare_mode"] for c in per_class.values()]
        fidelity = [c["oracle_fidelity"] for c in per_class.values()]
        assert faithful == [r * f for r, f in zip(rare, fidelity, strict=True)]
        assert np.isclose(np.mean(faithful[:8] + faithful[9:]), row["faithful_rare_mode_rate"])
    # Same plan and seed: the same files in both settings, different pixels where guided.
    base = sorted(p.name for p in (workdir / "w0" / "data").rglob("*.png"))
    guided = sorted(p.name for p in (workdir / "w2_z0" / "data").rglob("*.png"))
    assert base == guided
    report = (workdir / "guidance_study.md").read_text()
    assert report.startswith("# Guidance study") and "Oracle class fidelity per class" in report
    assert "Share of the rare mode (rotated) per class" in report
    assert "that the oracle still names as its class, per class" in report
    assert io.load_png(workdir / "guidance_study_modes.png").ndim == 3
    assert io.load_png(workdir / "guidance_study.png").shape[0] == 4 * 33 + 1  # a row a setting


def test_the_world_study_samples_with_the_full_sampler():
    steps = {v: load_config("guidance_study", v).ltg.sampler.num_steps for v in ("world", "test")}
    assert steps["world"] == load_config("guidance_study").ltg.sampler.num_steps > steps["test"]


def test_settings_put_the_baseline_first():
    config = load_config("guidance_study")
    first = guidance_study.settings(config)[0]
    assert first["name"] == "w0" and first["sampler.guidance.w"] == 0.0
    assert len(guidance_study.settings(config)) == 1 + 3 * 2 + len(config.extra)
    assert guidance_study.setting_name(2.0, "unet") == "w2_unet"
    ltg = guidance_study.setting_config(config, guidance_study.settings(config)[-1])
    assert ltg.sampler.guidance.w == 2.0
