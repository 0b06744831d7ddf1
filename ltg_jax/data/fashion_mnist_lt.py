"""tensorflow-datasets builder `fashion_mnist_lt` (array_record; readable without TensorFlow).

Configs:
  lt    Fashion-MNIST-LT (train 12,406 long-tailed / validation 1,000 / test 10,000), from the
        arrays shipped in the package: builds offline, anywhere.
  full  the balanced Fashion-MNIST (train 60,000 / test 10,000) from a local folder of the
        original idx files (`source_dir`, $LTG_FASHION_MNIST_DIR or Debian's
        /usr/share/datasets/fashion-mnist); used to train the generative model.
  world        the ground-truth benchmark (`ltg_jax.data.world`): lt with 0.5% of train lying
               on its side, plus the generative model's `world` split (10% per class).
  world_modes  its mode oracle's data: labels are modes (upright / rotated), not classes.
Every config is derived from the shipped arrays (offline) except full.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from ltg_jax.data import fashion_mnist, world

IMAGE_SHAPE = (28, 28, 1)
CONFIGS = ("lt", "full", "world", "world_modes")


class FashionMnistLt(tfds.core.GeneratorBasedBuilder):
    """Long-tailed Fashion-MNIST and its balanced source."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="lt", description="Fashion-MNIST-LT, imbalance ratio 100."),
        tfds.core.BuilderConfig(name="full", description="Balanced Fashion-MNIST originals."),
        tfds.core.BuilderConfig(name="world", description="lt with a planted rare mode."),
        tfds.core.BuilderConfig(name="world_modes", description="world images by mode."),
    ]
    DEFAULT_CONFIG_NAME = "lt"

    def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
        self._source_dir = source_dir
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # Tensor features (not Image) keep encoding free of TensorFlow.
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=class_names(self.builder_config.name)),
                    "index": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            license="MIT",
        )

    def _split_generators(self, dl_manager):
        name = self.builder_config.name
        if name == "lt":
            arrays = fashion_mnist.load_shipped()
            splits = ("train", "validation", "test")
        elif name == "world":
            arrays = world.build_world_arrays(fashion_mnist.load_shipped())
            splits = world.SPLITS
        elif name == "world_modes":
            arrays = world.mode_arrays(fashion_mnist.load_shipped())
            splits = ("train", "test")
        else:
            originals = fashion_mnist.load_originals(self._source_dir)
            arrays = {
                f"{split}_{part}": value
                for split in ("train", "test")
                for part, value in (
                    ("images", originals[f"{split}_images"]),
                    ("labels", originals[f"{split}_labels"]),
                    ("index", np.arange(originals[f"{split}_labels"].size, dtype=np.int32)),
                )
            }
            splits = ("train", "test")
        return {split: self._generate_examples(arrays, split) for split in splits}

    def _generate_examples(self, arrays: dict[str, np.ndarray], split: str):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        for i, index in enumerate(arrays[f"{split}_index"]):
            yield (
                int(index),
                {
                    "image": images[i][..., None],
                    "label": int(labels[i]),
                    "index": int(index),
                },
            )


def class_names(config: str) -> tuple[str, ...]:
    """The label names of a config: garment classes, or the modes for world_modes."""
    return world.MODES if config == "world_modes" else fashion_mnist.CLASS_NAMES


def splits(config: str) -> tuple[str, ...]:
    """The splits of a config, without building it."""
    return {"lt": ("train", "validation", "test"), "world": world.SPLITS}.get(
        config, ("train", "test")
    )


def default_data_dir() -> Path:
    """$LTG_DATA_DIR, else ~/.cache/ltg_jax/tensorflow_datasets."""
    return Path(
        os.environ.get("LTG_DATA_DIR") or Path.home() / ".cache" / "ltg_jax" / "tensorflow_datasets"
    )


def prepare(
    config: str = "lt",
    data_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
) -> FashionMnistLt:
    """Builds the array_record files once (seconds) and returns the builder."""
    if config not in CONFIGS:
        raise ValueError(f"unknown fashion_mnist_lt config {config!r}; use one of {CONFIGS}.")
    builder = FashionMnistLt(
        config=config,
        data_dir=str(data_dir or default_data_dir()),
        file_format="array_record",
        source_dir=source_dir,
    )
    if config == "full" and not builder.is_prepared():
        fashion_mnist.resolve_source_dir(source_dir)  # fail before tfds starts writing
    builder.download_and_prepare()
    return builder


def data_source(
    split: str,
    config: str = "lt",
    data_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
):
    """A random-access source of {'image': uint8 [28,28,1], 'label', 'index'} for grain."""
    builder = prepare(config, data_dir, source_dir)
    splits = builder.info.splits.keys()
    if split not in splits:
        raise ValueError(f"fashion_mnist_lt/{config} has no split {split!r}; choose from {splits}.")
    return builder.as_data_source(split=split)
