"""Atomic file output, JSON lines and image grids: nothing half-written survives a crash."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Our atomic writes' temp files: `.<name>.<random>.ltg-partial`. A job sweeps only this pattern
# (in a workdir it holds the lock of), never another program's `.tmp` files.
PARTIAL_SUFFIX = ".ltg-partial"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide outputs from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes text atomically (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Plain Python for JSON: numpy/jax scalars and arrays become lists/numbers, NaN/inf None.

    JSON has no NaN: `json.dumps` would write `NaN`, which strict readers reject. An undefined
    number (e.g. the std of one seed) is written as null.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON of `obj` (see `to_jsonable`), keys sorted."""
    return json.dumps(to_jsonable(obj), indent=indent, sort_keys=True, allow_nan=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes `obj` as indented JSON atomically."""
    return atomic_write_text(path, dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Reads one JSON file."""
    return json.loads(Path(path).read_text())


def atomic_save_npz(path: str | os.PathLike, compress: bool = False, **arrays: np.ndarray) -> Path:
    """Saves arrays as an .npz atomically (zlib-compressed if `compress`)."""
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def replace_dir(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Moves a fully written `staging` folder to `final`, replacing an older one."""
    staging, final = Path(staging), Path(final)
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Reads a JSON-lines file; a missing file reads as empty, a torn last line is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    complete = path.read_text().split("\n")[:-1]  # the last part: '' or a killed writer's
    return [json.loads(line) for line in complete if line.strip()]


def append_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Appends rows to a JSON-lines file, one flushed line each."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            f.write(dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[..., H, W, C] floats in [-1, 1] -> uint8 in [0, 255]."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """One image [H, W, C] (uint8, or float in [-1, 1]) -> PNG bytes."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = to_uint8(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Saves one image [H, W, C] as a PNG, atomically."""
    return atomic_write_bytes(path, png_bytes(image))


def load_png(path: str | os.PathLike) -> np.ndarray:
    """Loads a PNG as uint8 [H, W, C]."""
    array = np.asarray(Image.open(path))
    return array[..., None] if array.ndim == 2 else array


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles [N, H, W, C] images into one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] image."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = to_uint8(images)
    n, h, w, c = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = images[i]
    return grid


def save_grid(path: str | os.PathLike, images: np.ndarray, columns: int | None = None) -> Path:
    """Saves [N, H, W, C] images as one PNG grid, atomically."""
    return save_png(path, image_grid(images, columns))
