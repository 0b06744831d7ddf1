"""The ground-truth benchmark's construction (mode labels, counts, pixels) and the shifts."""

from __future__ import annotations

import numpy as np
import pytest

from ltg_jax.data import datasets, fashion_mnist, shifts, world


@pytest.fixture(scope="module")
def shipped():
    return fashion_mnist.load_shipped()


@pytest.fixture(scope="module")
def built(shipped):
    return world.build_world_arrays(shipped)


def test_predictor_split_has_the_rare_mode_at_half_a_percent(shipped, built):
    modes = built["train_modes"]
    assert modes.size == sum(fashion_mnist.TRAIN_COUNTS) == 12406
    assert modes.sum() == round(0.005 * 12406) == 62
    np.testing.assert_array_equal(built["train_labels"], shipped["train_labels"])
    np.testing.assert_array_equal(
        np.bincount(built["train_labels"], minlength=10), fashion_mnist.TRAIN_COUNTS
    )
    # Pixel-exact: rotated images are the originals turned 90 degrees, the rest untouched.
    rare = modes == world.RARE
    np.testing.assert_array_equal(built["train_images"][~rare], shipped["train_images"][~rare])
    np.testing.assert_array_equal(
        built["train_images"][rare], np.rot90(shipped["train_images"][rare], 1, axes=(1, 2))
    )
    # A garment on its side really differs from upright (not a symmetric no-op).
    moved = built["train_images"][rare].astype(int) - shipped["train_images"][rare]
    assert np.abs(moved).mean() > 5


def test_validation_and_test_are_upright(shipped, built):
    for split in ("validation", "test"):
        assert not built[f"{split}_modes"].any()
        np.testing.assert_array_equal(built[f"{split}_images"], shipped[f"{split}_images"])


def test_world_split_is_balanced_with_ten_percent_rare_per_class(shipped, built):
    labels, modes = built["world_labels"], built["world_modes"]
    assert labels.size == 10 * world.WORLD_PER_CLASS
    np.testing.assert_array_equal(np.bincount(labels), [world.WORLD_PER_CLASS] * 10)
    per_class_rare = np.bincount(labels[modes == world.RARE], minlength=10)
    np.testing.assert_array_equal(per_class_rare, [0.1 * world.WORLD_PER_CLASS] * 10)
    # Every world image is a train or validation image (never test), in its mode.
    pool = np.concatenate([shipped["train_images"], shipped["validation_images"]])
    pool_labels = np.concatenate([shipped["train_labels"], shipped["validation_labels"]])
    source = built["world_source"]
    np.testing.assert_array_equal(pool_labels[source], labels)
    expected = np.where(
        (modes == world.RARE)[:, None, None], np.rot90(pool[source], 1, axes=(1, 2)), pool[source]
    )
    np.testing.assert_array_equal(built["world_images"], expected)
    # A class with fewer images than WORLD_PER_CLASS uses each before any twice.
    boots = np.bincount(source[labels == 9])
    assert boots[boots > 0].max() - boots[boots > 0].min() <= 1


def test_construction_is_deterministic(shipped, built):
    again = world.build_world_arrays(shipped)
    assert set(again) == set(built)
    for key in built:
        np.testing.assert_array_equal(again[key], built[key])


def test_mode_arrays_label_both_modes_of_every_image(shipped):
    arrays = world.mode_arrays(shipped)
    n = shipped["train_labels"].size + shipped["validation_labels"].size
    assert arrays["train_images"].shape[0] == 2 * n
    np.testing.assert_array_equal(np.bincount(arrays["train_labels"]), [n, n])
    np.testing.assert_array_equal(
        arrays["test_images"][10000:], np.rot90(shipped["test_images"], 1, axes=(1, 2))
    )
    np.testing.assert_array_equal(world.set_upright(world.rotate(arrays["test_images"])),
                                  arrays["test_images"])  # fmt: skip


def test_dataset_descriptors_of_the_world_configs():
    data = datasets.default_config()
    data.config = "world"
    info = datasets.describe(data)
    assert info.splits == ("train", "validation", "test", "world")
    assert info.train_counts == fashion_mnist.TRAIN_COUNTS
    assert info.class_names == fashion_mnist.CLASS_NAMES
    data.config = "world_modes"
    info = datasets.describe(data)
    assert info.class_names == world.MODES and info.splits == ("train", "test")


def test_world_split_loads_through_tfds_with_its_modes(built):
    data = datasets.default_config()
    data.config = "world"
    train = datasets.load_split(data, "train")
    assert train["image"].shape == (12406, 32, 32, 1)
    # 62 rotated garments: their padded images are the rotated originals, anywhere in the split.
    rotated = {img.tobytes() for img in built["train_images"][built["train_modes"] == 1]}
    unpadded = ((train["image"][:, 2:30, 2:30, 0] + 1.0) * 127.5).round().astype(np.uint8)
    assert sum(img.tobytes() in rotated for img in unpadded) == 62


# ---------------------------------------------------------------- shifted test sets


def test_shifts_are_exact_and_keep_shape_and_range():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (3, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(shifts.rotate90(images)[0, :, :, 0], np.rot90(images[0, :, :, 0]))
    small = shifts.shrink(images)
    assert small[0, 0, 0, 0] == pytest.approx(images[0, :2, :2, 0].mean())
    assert (small[:, 4:] == -1).all() and (small[:, :, 4:] == -1).all()
    hidden = shifts.occlude(images)
    assert (hidden[:, :, 4:] == -1).all()
    np.testing.assert_array_equal(hidden[:, :, :4], images[:, :, :4])
    np.testing.assert_allclose(shifts.low_contrast(images), images / 2)
    noisy = shifts.noise(images)
    np.testing.assert_array_equal(noisy, shifts.noise(images))  # the same for every arm
    assert noisy.min() >= -1 and noisy.max() <= 1 and np.abs(noisy - images).mean() > 0.05
    for fn in shifts.SHIFTS.values():
        assert fn(images).shape == images.shape


def test_shifted_splits_are_named_and_unknown_shifts_refused():
    arrays = {"image": np.zeros((2, 4, 4, 1), np.float32), "label": np.array([0, 1])}
    out = shifts.shifted_splits("test", arrays, ["rotate90", "noise"])
    assert list(out) == ["test+rotate90", "test+noise"]
    np.testing.assert_array_equal(out["test+noise"]["label"], arrays["label"])
    with pytest.raises(ValueError, match="unknown shift.*'blur'.*rotate90"):
        shifts.check_shifts(["blur"])
    with pytest.raises(ValueError, match="square"):
        shifts.rotate90(np.zeros((1, 4, 6, 1)))


def test_the_shipped_world_models_tell_the_rare_mode_apart():
    """The shipped benchmark wires up (models, data, mode oracle, the Bag left out), and its
    mode oracle calls the test garments' modes right (Bag aside, whose mode it cannot tell)."""
    from pathlib import Path

    from ltg_jax import cli, mining, predictor, predictor_training

    root = Path(__file__).resolve().parents[1]
    config = cli.load_config_file(root / "configs" / "mine.py", "world")
    inputs = mining.check_inputs(config)
    assert inputs.mode_oracle.class_names == ("upright", "rotated")
    assert inputs.bundle.heads is not None  # the epistemic heads ship with the predictor
    test = mining.load_real(config, "test")
    keep = test["label"] != fashion_mnist.CLASS_NAMES.index("Bag")
    images = test["image"][keep][:1000]
    both = np.concatenate([images, shifts.rotate90(images)])
    truth = np.repeat([world.COMMON, world.RARE], len(images))
    logits = predictor_training.predict(
        inputs.mode_oracle.adapted_apply, inputs.mode_oracle.params["predictor"], both, 500
    )["logits"]
    assert np.mean(np.asarray(logits).argmax(-1) == truth) > 0.97
    assert isinstance(predictor.load_predictor(config.oracle), predictor.PredictorBundle)
