"""grain input pipelines: deterministic, indexable by step (so resuming needs no iterator state)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

IMAGE_SIZE = 32  # 28x28 originals padded to 32x32 so the VAE downsamples cleanly to 8x8
_PAD = (IMAGE_SIZE - 28) // 2
MAX_SHIFT = 2


def to_model_image(image: np.ndarray) -> np.ndarray:
    """uint8 [28,28,1] -> float32 [32,32,1] in [-1, 1], padded with background (-1)."""
    image = np.asarray(image, np.float32) / 127.5 - 1.0
    if image.shape[0] == IMAGE_SIZE:
        return image
    return np.pad(image, ((_PAD, _PAD), (_PAD, _PAD), (0, 0)), constant_values=-1.0)


def preprocess(example: dict[str, Any]) -> dict[str, np.ndarray]:
    """A source record -> {'image': float32 [32,32,1] in [-1,1], 'label': int32, 'index'}."""
    return {
        "image": to_model_image(example["image"]),
        "label": np.int32(example["label"]),
        "index": np.int64(example["index"]),
    }


def augment(example: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Light augmentation: random horizontal flip and a shift of up to 2 pixels."""
    image = example["image"]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    dy, dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2)
    padded = np.pad(image, ((MAX_SHIFT,) * 2, (MAX_SHIFT,) * 2, (0, 0)), constant_values=-1.0)
    top, left = MAX_SHIFT + dy, MAX_SHIFT + dx
    image = padded[top : top + image.shape[0], left : left + image.shape[1]]
    return {**example, "image": np.ascontiguousarray(image)}


def make_dataset(
    source: Sequence,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    augment_images: bool = False,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Batches {'image' [B,32,32,1], 'label' [B], 'index' [B]}; `dataset[step]` is step's batch.

    Step k's global batch is elements [kB, (k+1)B) of the shuffled, augmented dataset, whatever
    the process count; each process reads and batches only its `batch_size // process_count`
    rows of it, so a run sees the same data on any split of its devices over processes.
    Epochs are reshuffled (seed, epoch).
    """
    if batch_size % process_count:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the {process_count} processes; "
            "choose a multiple of jax.process_count()."
        )
    dataset = grain.MapDataset.source(source)
    if shuffle:
        dataset = dataset.shuffle(seed=seed)
    dataset = dataset.repeat(num_epochs).map(preprocess)
    if augment_images:
        dataset = dataset.random_map(augment, seed=seed + 1)
    if process_count > 1:
        rows = ProcessRows(dataset, batch_size, process_index, process_count)
        dataset = grain.MapDataset.source(rows)
    return dataset.batch(batch_size // process_count, drop_remainder=drop_remainder)


class ProcessRows(Sequence):
    """One process's rows of each global batch of a random-access dataset (lazy).

    Global batch k is elements [kB, (k+1)B); process p of P reads its contiguous block
    [kB + p·B/P, kB + (p+1)·B/P), which is also its block of the sharded global array.
    """

    def __init__(self, dataset: Sequence, batch_size: int, index: int, count: int):
        self.dataset, self.batch_size = dataset, batch_size
        self.rows = batch_size // count
        self.offset = index * self.rows

    def __len__(self) -> int:
        return (len(self.dataset) // self.batch_size) * self.rows

    def __getitem__(self, j: int):
        batch, row = divmod(int(j), self.rows)
        return self.dataset[batch * self.batch_size + self.offset + row]


def iterate(
    dataset: grain.MapDataset, start_step: int = 0, num_threads: int = 2
) -> Iterator[dict[str, np.ndarray]]:
    """Iterates batches from `start_step` on, with background prefetch."""
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)
    return iter(dataset.slice(slice(start_step, None)).to_iter_dataset(options))


def load_arrays(source: Sequence) -> dict[str, np.ndarray]:
    """A whole (small) split as model-ready arrays: image [N,32,32,1], label [N], index [N]."""
    return make_dataset(
        source, batch_size=len(source), seed=0, shuffle=False, num_epochs=1, drop_remainder=False
    )[0]


class ArraySource:
    """Random access over equal-length arrays: record i = {name: array[i]}."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"arrays differ in length: {lengths}")
        self.arrays = arrays
        self.length = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {name: array[index] for name, array in self.arrays.items()}


def make_array_dataset(
    arrays: dict[str, np.ndarray],
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Batches of in-memory arrays (e.g. cached latents); `dataset[step]` is step's batch."""
    if batch_size % process_count:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the {process_count} processes; "
            "choose a multiple of jax.process_count()."
        )
    dataset = grain.MapDataset.source(ArraySource(arrays))
    if shuffle:
        dataset = dataset.shuffle(seed=seed)
    dataset = dataset.repeat(num_epochs)
    if process_count > 1:  # as in make_dataset: the same global batches on any process count
        dataset = grain.MapDataset.source(
            ProcessRows(dataset, batch_size, process_index, process_count)
        )
    return dataset.batch(batch_size // process_count)
