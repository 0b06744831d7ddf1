"""Dataset descriptors and split loaders for the real (long-tailed) data of any source.

A `data` config block names the source and its options; `describe` gives the descriptor
(class names, image shape, splits, train counts -> many/medium/few groups) and `load_split` a
whole split as arrays {'image' f32 [N,H,W,C] in [-1,1], 'label' int32 [N]}. Sources:

  fashion_mnist_lt   the embedded default (config 'lt' | 'full'; data_dir, source_dir) and
                     the ground-truth benchmark (config 'world' | 'world_modes')
  imagefolder        root/<split>/<class>/*.png|jpg (torchvision / HF imagefolder layout);
                     class ids follow the sorted class folder names of root/train
  tfds               any tensorflow-datasets builder by name (e.g. oxford_flowers102,
                     caltech101), read from data_dir; manual_dir for builders that need
                     local files (imagenet2012, stanford_cars)

Groups: a class with more than `many_threshold` training images is 'many', fewer than
`few_threshold` 'few', the rest 'medium' (ImageNet-LT's 100 / 20 by default).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

SOURCES = ("fashion_mnist_lt", "imagefolder", "tfds")
# (many_threshold, few_threshold) when the config leaves them unset: Fashion-MNIST-LT's
# published split (>= 1000 many, < 200 few of 5000 ... 50), else ImageNet-LT's (> 100, < 20).
SOURCE_THRESHOLDS = {"fashion_mnist_lt": (999, 200), "imagefolder": (100, 20), "tfds": (100, 20)}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: enough to plan sampling, fine-tuning and the report."""

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C) of load_split's images
    splits: tuple[str, ...]
    train_counts: tuple[int, ...]
    many_threshold: int = 100
    few_threshold: int = 20

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def groups(self) -> dict[str, tuple[int, ...]]:
        """Class ids of the many / medium / few groups (by training-image count)."""
        return frequency_groups(self.train_counts, self.many_threshold, self.few_threshold)


def frequency_groups(
    train_counts: tuple[int, ...], many_threshold: int, few_threshold: int
) -> dict[str, tuple[int, ...]]:
    """many: count > many_threshold; few: count < few_threshold; medium: the rest."""
    many = tuple(k for k, n in enumerate(train_counts) if n > many_threshold)
    few = tuple(k for k, n in enumerate(train_counts) if n < few_threshold)
    medium = tuple(k for k in range(len(train_counts)) if k not in many and k not in few)
    return {"many": many, "medium": medium, "few": few}


def default_config() -> ml_collections.ConfigDict:
    """The `data` block: the embedded Fashion-MNIST-LT, every other source's keys empty."""
    return ml_collections.ConfigDict(
        {
            "source": "fashion_mnist_lt",  # fashion_mnist_lt | imagefolder | tfds
            "config": "lt",  # fashion_mnist_lt: lt | full | world | world_modes
            "data_dir": "",  # fashion_mnist_lt / tfds: where the prepared builder lives
            "source_dir": "",  # fashion_mnist_lt: the original idx files ('full')
            "root": "",  # imagefolder: root/<split>/<class>/*.png
            "name": "",  # tfds: builder name, e.g. oxford_flowers102
            "manual_dir": "",  # tfds: local files of builders that cannot download
            "image_size": (),  # resize to (height, width); () = as stored
            # Groups by train count; unset = the source's own (SOURCE_THRESHOLDS).
            "many_threshold": ml_collections.config_dict.placeholder(int),
            "few_threshold": ml_collections.config_dict.placeholder(int),
        }
    )


def _check_source(data: Mapping[str, Any]) -> str:
    source = str(data["source"])
    if source not in SOURCES:
        raise ValueError(f"--config.data.source={source!r}; use one of {SOURCES}")
    return source


def describe(data: Mapping[str, Any]) -> DatasetInfo:
    """The descriptor of a `data` config block (reads file names or builder info, not images)."""
    source = _check_source(data)
    many, few = SOURCE_THRESHOLDS[source]
    given_many, given_few = data.get("many_threshold"), data.get("few_threshold")
    thresholds = {
        "many_threshold": int(many if given_many is None else given_many),
        "few_threshold": int(few if given_few is None else given_few),
    }
    if source == "fashion_mnist_lt":
        from ltg_jax.data import fashion_mnist, fashion_mnist_lt, pipeline

        config = str(data["config"])
        size = _image_size(data) or (pipeline.IMAGE_SIZE, pipeline.IMAGE_SIZE)
        counts = {
            "lt": fashion_mnist.TRAIN_COUNTS,
            "world": fashion_mnist.TRAIN_COUNTS,
            "world_modes": (
                sum(fashion_mnist.TRAIN_COUNTS) + 10 * fashion_mnist.VALIDATION_PER_CLASS,
            )
            * 2,
        }.get(config, (6000,) * 10)
        return DatasetInfo(
            f"fashion_mnist_lt/{config}", fashion_mnist_lt.class_names(config), (*size, 1),
            fashion_mnist_lt.splits(config), tuple(counts), **thresholds,
        )  # fmt: skip
    if source == "imagefolder":
        return _describe_imagefolder(_imagefolder_root(data), _image_size(data), thresholds)
    key = json.dumps({**dict(data), **thresholds}, sort_keys=True, default=str)
    return _describe_tfds(key)


def load_split(data: Mapping[str, Any], split: str, max_examples: int = 0) -> dict[str, Any]:
    """A whole split: {'image' f32 [N,H,W,C] in [-1,1], 'label' int32 [N]} (first N if given)."""
    source = _check_source(data)
    info = describe(data)
    if split not in info.splits:
        raise ValueError(f"{info.name} has no split {split!r}; its splits: {list(info.splits)}")
    if source == "fashion_mnist_lt":
        import grain

        from ltg_jax.data import fashion_mnist_lt, pipeline

        src = fashion_mnist_lt.data_source(
            split, config=data["config"], data_dir=data["data_dir"] or None,
            source_dir=data["source_dir"] or None,
        )  # fmt: skip
        src = grain.MapDataset.source(src)
        arrays = pipeline.load_arrays(src[:max_examples] if max_examples else src)
        return {"image": arrays["image"], "label": arrays["label"].astype(np.int32)}
    if source == "imagefolder":
        files = _imagefolder_files(_imagefolder_root(data), split, info.class_names)
        files = files[:max_examples] if max_examples else files
        images = [_read_image(path, info.image_shape) for path, _ in files]
        labels = np.asarray([label for _, label in files], np.int32)
    else:
        source_ = _tfds_builder(data).as_data_source(split)
        n = min(len(source_), max_examples) if max_examples else len(source_)
        records = [source_[i] for i in range(n)]
        images = [_to_shape(np.asarray(r["image"]), info.image_shape) for r in records]
        labels = np.asarray([int(r["label"]) for r in records], np.int32)
    stacked = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return {"image": stacked, "label": labels}


# ---------------------------------------------------------------- image folders


def _image_size(data: Mapping[str, Any]) -> tuple[int, int] | None:
    size = tuple(int(s) for s in (data.get("image_size") or ()))
    if len(size) == 1:
        size = size * 2
    if size and (len(size) != 2 or min(size) <= 0):
        raise ValueError(f"--config.data.image_size={size}: give (height, width) or ()")
    return size or None


def _imagefolder_root(data: Mapping[str, Any]) -> Path:
    root = Path(str(data["root"]))
    if not str(data["root"]) or not (root / "train").is_dir():
        raise FileNotFoundError(
            f"--config.data.root={str(data['root'])!r}: need a folder with train/<class>/*.png "
            "(and validation/ or test/ alike), the imagefolder layout"
        )
    return root


def _imagefolder_files(root: Path, split: str, class_names: tuple[str, ...]):
    """[(path, class id)] of a split, sorted by class then file name."""
    files = []
    for k, name in enumerate(class_names):
        folder = root / split / name
        if folder.is_dir():
            files += [
                (p, k) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
            ]
    unknown = sorted(
        p.name for p in (root / split).iterdir() if p.is_dir() and p.name not in class_names
    )
    if unknown:
        raise ValueError(f"{root / split}: class folders {unknown} are not in {root / 'train'}")
    return files


@functools.lru_cache(maxsize=8)
def _describe_imagefolder_cached(root: Path, size, thresholds_json: str, stamp) -> DatasetInfo:
    del stamp  # cache key only
    class_names = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if not class_names:
        raise ValueError(f"{root / 'train'} has no class folders")
    splits = tuple(s for s in ("train", "validation", "test") if (root / s).is_dir())
    train = _imagefolder_files(root, "train", class_names)
    if not train:
        raise ValueError(f"{root / 'train'}: no images ({', '.join(IMAGE_SUFFIXES)})")
    counts = np.bincount([k for _, k in train], minlength=len(class_names))
    with Image.open(train[0][0]) as first:
        channels = 1 if first.mode in ("L", "I", "1") else 3
        shape = (*(size or (first.height, first.width)), channels)
    return DatasetInfo(
        f"imagefolder:{root}", class_names, shape, splits, tuple(int(c) for c in counts),
        **json.loads(thresholds_json),
    )  # fmt: skip


def _describe_imagefolder(root: Path, size, thresholds: Mapping[str, int]) -> DatasetInfo:
    stamp = (root / "train").stat().st_mtime_ns
    return _describe_imagefolder_cached(
        root.resolve(), size, json.dumps(dict(thresholds), sort_keys=True), stamp
    )


def _read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """An image file -> uint8 [H,W,C] of the descriptor."""
    with Image.open(path) as image:
        return _pil_to_shape(image, shape)


def _to_shape(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 [h,w,c] -> [H,W,C] of the descriptor."""
    mode = "L" if image.shape[-1] == 1 else "RGB"
    return _pil_to_shape(Image.fromarray(image[..., 0] if mode == "L" else image, mode), shape)


def _pil_to_shape(image: Image.Image, shape: tuple[int, int, int]) -> np.ndarray:
    """grey <-> RGB and a bicubic resize to (H, W) when needed: uint8 [H,W,C]."""
    image = image.convert("L" if shape[2] == 1 else "RGB")
    if image.size != (shape[1], shape[0]):
        image = image.resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


# ---------------------------------------------------------------- tensorflow-datasets


def _tfds_builder(data: Mapping[str, Any]):
    import tensorflow_datasets as tfds

    name = str(data["name"])
    if not name:
        raise ValueError("--config.data.name: give the tensorflow-datasets builder name")
    try:
        # array_record: random access for grain / as_data_source, no TensorFlow needed.
        builder = tfds.builder(
            name, data_dir=str(data["data_dir"]) or None, file_format="array_record"
        )
    except Exception as e:
        raise ValueError(f"--config.data.name={name!r}: no such tfds builder ({e})") from e
    if not builder.is_prepared():
        manual = str(data.get("manual_dir", "")) or None
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual)
        )
    return builder


@functools.lru_cache(maxsize=8)
def _describe_tfds(key: str) -> DatasetInfo:
    """Cached on the whole data config: counting the train labels reads the split once."""
    data = json.loads(key)
    thresholds = {k: data[k] for k in ("many_threshold", "few_threshold")}
    builder = _tfds_builder(data)
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(f"tfds {builder.name}: needs 'image' and 'label' features")
    names = tuple(features["label"].names)
    train = builder.as_data_source("train")
    counts = np.bincount([int(train[i]["label"]) for i in range(len(train))], minlength=len(names))
    stored = tuple(features["image"].shape)
    size = _image_size(data) or stored[:2]
    if None in size:
        raise ValueError(
            f"tfds {builder.name} has images of varying size: set --config.data.image_size"
        )
    return DatasetInfo(
        f"tfds:{builder.name}", names, (*size, int(stored[2] or 3)), tuple(builder.info.splits),
        tuple(int(c) for c in counts), **thresholds,
    )  # fmt: skip
