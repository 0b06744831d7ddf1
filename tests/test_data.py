"""Fashion-MNIST-LT: derivation, the shipped arrays, the tfds builder and the grain pipeline."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from ltg_jax.data import fashion_mnist, fashion_mnist_lt, pipeline

EXPECTED_COUNTS = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture(scope="module")
def fake_originals(tmp_path_factory) -> Path:
    """A tiny folder of the four idx files: 30 train and 20 test images, 10 classes."""
    folder = tmp_path_factory.mktemp("fashion_originals")
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("t10k", 20)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        suffix = ".gz" if split == "train" else ""
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, compress=bool(suffix))
        write_idx(folder / f"{split}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)
    return folder


@pytest.fixture(scope="module")
def shipped() -> dict[str, np.ndarray]:
    return fashion_mnist.load_shipped()


def test_long_tail_counts_follow_the_cifar_lt_protocol():
    assert fashion_mnist.long_tail_counts() == EXPECTED_COUNTS
    assert fashion_mnist.GROUPS == {"many": (0, 1, 2, 3), "medium": (4, 5, 6), "few": (7, 8, 9)}


def test_shipped_splits_have_the_documented_sizes(shipped):
    assert tuple(np.bincount(shipped["train_labels"], minlength=10)) == EXPECTED_COUNTS
    assert np.all(np.bincount(shipped["validation_labels"], minlength=10) == 100)
    assert np.all(np.bincount(shipped["test_labels"], minlength=10) == 1000)
    assert shipped["train_images"].shape == (12406, 28, 28)
    assert shipped["train_images"].dtype == np.uint8
    # Validation images come from the training pool but never overlap the train split.
    assert not set(shipped["train_index"]) & set(shipped["validation_index"])


def test_shipped_data_is_reproducible_from_the_originals(shipped):
    try:
        originals = fashion_mnist.load_originals()
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST originals not installed (apt-get install dataset-fashion-mnist)")
    derived = fashion_mnist.build_long_tail_arrays(originals)
    for key, value in derived.items():
        np.testing.assert_array_equal(value, shipped[key], err_msg=key)


def test_derive_long_tail_is_seeded_disjoint_and_class_pure():
    labels = np.repeat(np.arange(3), 20)
    train, val = fashion_mnist.derive_long_tail(labels, counts=(10, 5, 2), validation_per_class=4)
    again, _ = fashion_mnist.derive_long_tail(labels, counts=(10, 5, 2), validation_per_class=4)
    np.testing.assert_array_equal(train, again)
    assert tuple(np.bincount(labels[train])) == (10, 5, 2)
    assert tuple(np.bincount(labels[val])) == (4, 4, 4)
    assert not set(train) & set(val)
    with pytest.raises(ValueError, match="class 0 has 20 images"):
        fashion_mnist.derive_long_tail(labels, counts=(19, 1, 1), validation_per_class=4)


def test_read_idx_reads_plain_and_gzipped_files(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", array)
    write_idx(tmp_path / "b.gz", array, compress=True)
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "a"), array)
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "b.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not a uint8 idx file"):
        fashion_mnist.read_idx(tmp_path / "bad")


def test_missing_originals_error_says_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.resolve_source_dir(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="LTG_FASHION_MNIST_DIR"):
        fashion_mnist_lt.data_source("train", "full", tmp_path / "tfds", tmp_path / "nowhere")


def test_tfds_builder_serves_the_shipped_splits(shipped):
    for split in ("train", "validation", "test"):
        source = fashion_mnist_lt.data_source(split)
        assert len(source) == shipped[f"{split}_labels"].size
    example = fashion_mnist_lt.data_source("validation")[0]
    row = int(np.flatnonzero(shipped["validation_index"] == example["index"])[0])
    np.testing.assert_array_equal(example["image"][..., 0], shipped["validation_images"][row])
    assert example["label"] == shipped["validation_labels"][row]
    with pytest.raises(ValueError, match="no split 'valid'"):
        fashion_mnist_lt.data_source("valid")
    with pytest.raises(ValueError, match="unknown fashion_mnist_lt config 'balanced'.*'world'"):
        fashion_mnist_lt.data_source("train", "balanced")


def test_tfds_full_config_reads_a_local_originals_folder(fake_originals, tmp_path):
    train = fashion_mnist_lt.data_source("train", "full", tmp_path, fake_originals)
    test = fashion_mnist_lt.data_source("test", "full", tmp_path, fake_originals)
    assert (len(train), len(test)) == (30, 20)
    labels = sorted(int(train[i]["label"]) for i in range(30))
    assert labels == sorted(np.arange(30) % 10)


def test_preprocess_pads_and_scales_to_minus_one_one():
    image = np.full((28, 28, 1), 255, np.uint8)
    out = pipeline.preprocess({"image": image, "label": 3, "index": 7})
    assert out["image"].shape == (32, 32, 1) and out["image"].dtype == np.float32
    assert out["image"][2:30, 2:30].min() == 1.0
    assert out["image"][:2].max() == -1.0  # padding is background
    assert out["label"] == 3 and out["index"] == 7


def test_dataset_is_indexable_by_step_and_reshuffles_epochs():
    source = fashion_mnist_lt.data_source("validation")
    make = lambda: pipeline.make_dataset(source, batch_size=100, seed=3, augment_images=True)
    first, second = make(), make()
    for step in (0, 9, 10, 25):
        np.testing.assert_array_equal(first[step]["image"], second[step]["image"])
    epoch0 = np.concatenate([first[s]["index"] for s in range(10)])
    epoch1 = np.concatenate([first[s]["index"] for s in range(10, 20)])
    assert sorted(epoch0) == sorted(epoch1) and not np.array_equal(epoch0, epoch1)
    batch = next(pipeline.iterate(first, start_step=9))
    np.testing.assert_array_equal(batch["index"], first[9]["index"])
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0


def test_processes_read_disjoint_shards():
    source = fashion_mnist_lt.data_source("validation")
    shards = [
        pipeline.make_dataset(
            source, batch_size=100, seed=0, num_epochs=1, process_index=p, process_count=2
        )
        for p in range(2)
    ]
    seen = [np.concatenate([shard[s]["index"] for s in range(len(shard))]) for shard in shards]
    assert len(seen[0]) == len(seen[1]) == 500
    assert not set(seen[0]) & set(seen[1])
    # Together they read one process's global batches: the data do not depend on the split.
    whole = pipeline.make_dataset(source, batch_size=100, seed=0, num_epochs=1, augment_images=True)
    halves = [
        pipeline.make_dataset(source, batch_size=100, seed=0, num_epochs=1, augment_images=True,
                              process_index=p, process_count=2)
        for p in range(2)
    ]  # fmt: skip
    for step in (0, 7):
        for key in ("index", "image"):
            joined = np.concatenate([h[step][key] for h in halves])
            np.testing.assert_array_equal(joined, whole[step][key])
    with pytest.raises(ValueError, match="multiple of jax.process_count"):
        pipeline.make_dataset(source, batch_size=101, seed=0, process_count=2)


def test_augment_keeps_shape_range_and_content():
    image = pipeline.to_model_image(np.full((28, 28, 1), 200, np.uint8))
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = pipeline.augment({"image": image, "label": 0}, rng)["image"]
        assert out.shape == image.shape
        assert out.min() >= -1.0 and out.max() <= 1.0
        assert (out > 0).sum() == (image > 0).sum()  # a shift of <=2 px loses no foreground
