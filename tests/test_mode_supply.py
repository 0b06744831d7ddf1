"""The perfect generator's ceiling on the ground-truth benchmark (ltg_jax/mode_supply.py)."""

from __future__ import annotations

import numpy as np
import pytest
from test_mining import config_for, models  # noqa: F401  (models is a fixture)

from ltg_jax import io, mode_supply
from ltg_jax.data import fashion_mnist, world


@pytest.fixture(scope="module")
def world_arrays():
    return world.build_world_arrays(fashion_mnist.load_shipped())


def test_upright_world_undoes_every_planted_rotation(world_arrays):
    images, labels = mode_supply.upright_world(world_arrays)
    shipped = fashion_mnist.load_shipped()
    pool = np.concatenate([shipped["train_images"], shipped["validation_images"]])
    np.testing.assert_array_equal(images, pool[world_arrays["world_source"]])
    np.testing.assert_array_equal(labels, world_arrays["world_labels"])


def test_supply_set_has_exact_counts_and_rotates_exactly_its_share(world_arrays):
    images, labels = mode_supply.upright_world(world_arrays)
    per_class = [8, 0, 4] + [2] * 7
    s = mode_supply.supply_set(images, labels, per_class, 0.25, seed=3)
    assert s["image"].shape == (sum(per_class), 32, 32, 1) and s["image"].dtype == np.float32
    assert s["image"].min() >= -1.0 and s["image"].max() <= 1.0
    np.testing.assert_array_equal(np.bincount(s["label"], minlength=10), per_class)
    rotated_per_class = np.bincount(s["label"], weights=s["mode"], minlength=10)
    np.testing.assert_array_equal(rotated_per_class, [round(0.25 * n) for n in per_class])
    # Every image is an upright world image of its class, rotated exactly where mode says so.
    unpadded = s["image"][:, 2:30, 2:30, 0]  # padded with background, as the real data
    assert (s["image"][:, :2] == -1.0).all() and (s["image"][:, :, 30:] == -1.0).all()
    upright = np.where(s["mode"][:, None, None] == world.RARE,
                       world.set_upright(unpadded), unpadded)  # fmt: skip
    pixels = np.round((upright + 1.0) * 127.5).astype(np.uint8)
    for img, label in zip(pixels, s["label"], strict=True):
        same = np.flatnonzero((images == img).all(axis=(1, 2)))
        assert same.size and (labels[same] == label).all()
    again = mode_supply.supply_set(images, labels, per_class, 0.25, seed=3)
    np.testing.assert_array_equal(again["image"], s["image"])
    other = mode_supply.supply_set(images, labels, per_class, 0.25, seed=4)
    assert not np.array_equal(other["image"], s["image"])
    with pytest.raises(ValueError, match="lower the budget"):
        mode_supply.supply_set(images, labels, [5000] * 10, 0.0, seed=0)


def supply_config(models, **overrides):  # noqa: F811
    return config_for(
        models,
        **{"data.config": "world", "eval.shifts": ("rotate90",), "seeds": (0,),
           "generation_seeds": (0, 1), "supply.shares": (0.0, 1.0), **overrides},
    )  # fmt: skip


def test_mode_supply_fine_tunes_every_share_and_draw_and_resumes(models, tmp_path):  # noqa: F811
    config = supply_config(models)
    summary = mode_supply.run_mode_supply(config, tmp_path)
    rows = {r["share"]: r for r in summary["rows"]}
    few = sum(summary["per_class"])  # the test budget: 2 per few-shot class, none elsewhere
    assert rows["real"]["images"] == 0 and rows[0.0]["rotated"] == 0
    assert rows[1.0]["images"] == rows[1.0]["rotated"] == few > 0
    for share in (0.0, 1.0):
        rare = rows[share]["test+rotate90"]
        assert set(rare["per_generation"]) == {"0", "1"} and rare["overall"]["n"] == 2
        for draw in (0, 1):
            trained = io.read_json(
                tmp_path / "finetune" / f"share_{share:g}" / f"draw_{draw}" / "trained_on.json"
            )
            assert trained["num_synthetic"] == few
    gain = summary["gains"][0]
    assert gain["share"] == 1.0 and gain["base"] == 0.0
    assert gain["gain"] == pytest.approx(
        rows[1.0]["test+rotate90"]["overall"]["mean"]
        - rows[0.0]["test+rotate90"]["overall"]["mean"]
    )
    assert "| share 1 |" in (tmp_path / mode_supply.SUPPLY_MD).read_text()
    assert (tmp_path / mode_supply.SUPPLY_PNG).is_file()
    stages = io.read_json(tmp_path / "stages.json")
    assert mode_supply.run_mode_supply(config, tmp_path) == summary  # resumed: nothing redone
    assert io.read_json(tmp_path / "stages.json") == stages
    with pytest.raises(ValueError, match="another config"):
        mode_supply.run_mode_supply(supply_config(models, **{"finetune.num_steps": 5}), tmp_path)


def test_mode_supply_refuses_what_cannot_work(models):  # noqa: F811
    with pytest.raises(ValueError, match="configs/mine.py:world"):
        mode_supply.check_supply(config_for(models))
    with pytest.raises(ValueError, match="shares in"):
        mode_supply.check_supply(supply_config(models, **{"supply.shares": (0.5, 1.5)}))
    with pytest.raises(ValueError, match="add rotate90"):
        mode_supply.check_supply(supply_config(models, **{"eval.shifts": ("noise",)}))


def test_mining_points_pair_each_generated_set_with_its_rotated_images_and_accuracy():
    out = {
        "shifted": {"rotate90": {"split": "test+rotate90", "arms": {
            "ltg": {"per_generation": {"0": {"overall": 0.3}, "1": {"overall": 0.4}}},
            "real": {"overall": {"mean": 0.2}},
        }}},
        "modes": {"rare_rate": {"ltg": {"kept": 0.5}, "ltg_gen1": {"kept": 0.25}}},
        "synthetic": {"ltg": {"kept": 10}, "ltg_gen1": {"kept": 40}},
    }  # fmt: skip
    points = mode_supply.mining_points(out, "test+rotate90")
    assert points == {"ltg": [{"rotated": 5.0, "images": 10, "overall": 0.3},
                              {"rotated": 10.0, "images": 40, "overall": 0.4}]}  # fmt: skip
