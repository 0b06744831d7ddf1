"""Fashion-MNIST originals and the long-tailed Fashion-MNIST-LT split derived from them."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
SOURCE_DIR_ENV = "LTG_FASHION_MNIST_DIR"
ORIGINAL_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# CIFAR-10-LT protocol: n_i = floor(N_MAX * IMBALANCE^(-i / (K - 1))).
N_MAX = 5000
IMBALANCE_RATIO = 100
VALIDATION_PER_CLASS = 100
DERIVATION_SEED = 0
SHIPPED_NPZ = Path(__file__).parent / "assets" / "fashion_mnist_lt.npz"
WHERE_TO_GET = (
    "Get the four original idx files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) with `apt-get install "
    f"dataset-fashion-mnist` (installs them under {DEBIAN_DIR}) or from "
    "github.com/zalandoresearch/fashion-mnist, then pass their folder (or set "
    f"${SOURCE_DIR_ENV})."
)


def long_tail_counts(
    num_classes: int = NUM_CLASSES, n_max: int = N_MAX, imbalance: float = IMBALANCE_RATIO
) -> tuple[int, ...]:
    """Training images kept per class: floor(n_max * imbalance^(-i/(K-1)))."""
    return tuple(
        int(np.floor(n_max * imbalance ** (-i / (num_classes - 1)))) for i in range(num_classes)
    )


def frequency_groups(train_counts: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Many (>=1000 train images), medium (200-999) and few (<200) classes."""
    return {
        "many": tuple(k for k, n in enumerate(train_counts) if n >= 1000),
        "medium": tuple(k for k, n in enumerate(train_counts) if 200 <= n < 1000),
        "few": tuple(k for k, n in enumerate(train_counts) if n < 200),
    }


TRAIN_COUNTS = long_tail_counts()
GROUPS = frequency_groups(TRAIN_COUNTS)


def resolve_source_dir(source_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the original idx files: the argument, else $LTG_FASHION_MNIST_DIR, else
    Debian's."""
    path = Path(source_dir or os.environ.get(SOURCE_DIR_ENV) or DEBIAN_DIR)
    missing = [name for name in ORIGINAL_FILES.values() if _find_idx(path, name) is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST originals not found in {path} (missing: {', '.join(missing)}). "
            + WHERE_TO_GET
        )
    return path


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an idx file (optionally gzipped) into a uint8 array."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file name says
        data = gzip.decompress(data)
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte payload
        raise ValueError(f"{path} is not a uint8 idx file (magic {magic:#x}).")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_originals(source_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The four original arrays: images uint8 [N, 28, 28], labels uint8 [N]."""
    folder = resolve_source_dir(source_dir)
    return {key: read_idx(_find_idx(folder, stem)) for key, stem in ORIGINAL_FILES.items()}


def derive_long_tail(
    train_labels: np.ndarray,
    counts: tuple[int, ...] = TRAIN_COUNTS,
    validation_per_class: int = VALIDATION_PER_CLASS,
    seed: int = DERIVATION_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the original training set: (long-tailed train, balanced validation).

    Per class, one seeded permutation; its head is the train share and the next
    `validation_per_class` images the validation share, so the two never overlap.
    """
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for k, n_k in enumerate(counts):
        members = np.flatnonzero(train_labels == k)
        if n_k + validation_per_class > members.size:
            raise ValueError(f"class {k} has {members.size} images, needs {n_k} + validation.")
        order = rng.permutation(members)
        train.append(np.sort(order[:n_k]))
        validation.append(np.sort(order[n_k : n_k + validation_per_class]))
    return np.concatenate(train), np.concatenate(validation)


def build_long_tail_arrays(originals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fashion-MNIST-LT as arrays: {split}_images/_labels/_index for train/validation/test."""
    train_idx, val_idx = derive_long_tail(originals["train_labels"])
    test_idx = np.arange(originals["test_labels"].size)
    arrays = {}
    for split, source, idx in (
        ("train", "train", train_idx),
        ("validation", "train", val_idx),
        ("test", "test", test_idx),
    ):
        arrays[f"{split}_images"] = originals[f"{source}_images"][idx]
        arrays[f"{split}_labels"] = originals[f"{source}_labels"][idx]
        arrays[f"{split}_index"] = idx.astype(np.int32)
    return arrays


def load_shipped(path: str | os.PathLike = SHIPPED_NPZ) -> dict[str, np.ndarray]:
    """The Fashion-MNIST-LT arrays shipped with the package."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: this checkout lacks the shipped Fashion-MNIST-LT. Recreate it "
            "with "
            "`python tools/derive_fashion_mnist_lt.py --source_dir DIR`. " + WHERE_TO_GET
        )
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
