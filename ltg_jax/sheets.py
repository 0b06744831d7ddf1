"""Annotated contact sheets: what a reviewer looks at, legible at the embedded resolution.

One order everywhere: hardest (highest guidance signal) first, left to right, top to bottom.
Each tile is upscaled (nearest neighbour, so pixels stay honest) and captioned with

    #<index> <signal>          the sample's global index (its file name) and guidance signal
    <predicted class> <prob>   the predictor's verdict; red when it is not the sample's class

and each row may carry a label (the class name) on its left.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ltg_jax import io

MIN_TILE = 96  # px: small images are upscaled by an integer factor to at least this
FONT_SIZE = 11
LINE = FONT_SIZE + 3
PAD = 4
INK, MISMATCH, PAPER, BLANK = (20, 20, 20), (200, 20, 20), (255, 255, 255), (235, 235, 235)


def hardest_first(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows sorted by guidance signal, highest first (unscored last; ties by index)."""
    return sorted(rows, key=lambda r: (-signal_value(r), int(r["index"])))


def signal_value(row: Mapping[str, Any], name: str = "guidance") -> float:
    """A row's signal as a float; -inf when missing or NaN (sorts as easiest)."""
    value = row.get("signals", {}).get(name)
    return -math.inf if value is None or math.isnan(float(value)) else float(value)


def caption(row: Mapping[str, Any]) -> tuple[list[str], bool]:
    """(caption lines, predictor disagrees with the class) of one metadata row."""
    value = signal_value(row)
    lines = [f"#{int(row['index'])}  " + ("-" if math.isinf(value) else f"{value:.3g}")]
    mismatch = False
    if "predicted_class" in row:
        name = str(row.get("predicted_name", row["predicted_class"]))
        lines.append(f"{name[:14]} {float(row['predicted_prob']):.2f}")
        mismatch = int(row["predicted_class"]) != int(row["class_id"])
    return lines, mismatch


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _upscale(image: np.ndarray, scale: int) -> Image.Image:
    """uint8 [H,W,C] -> an RGB PIL image `scale` times larger (nearest neighbour)."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    return Image.fromarray(rgb).resize(
        (rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST
    )


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things go on a sheet (pixels)."""

    scale: int  # upscale factor of every tile
    tile: tuple[int, int]  # (height, width) of an upscaled tile
    cell: tuple[int, int]  # (height, width) of a tile with its caption and padding
    left: int  # width of the row-label column
    top: int  # height of the title
    columns: int

    def origin(self, i: int) -> tuple[int, int]:
        """(x, y) of tile i's top-left corner."""
        r, c = divmod(i, self.columns)
        return self.left + PAD + c * self.cell[1], self.top + PAD + r * self.cell[0]


def layout(
    shape: Sequence[int],
    columns: int,
    caption_lines: int,
    row_labels: Sequence[str] | None = None,
    title: str = "",
) -> Layout:
    """The layout of a sheet of [H,W,C] tiles; small tiles grow to at least MIN_TILE px."""
    scale = max(1, math.ceil(MIN_TILE / max(shape[0], shape[1])))
    tile = (shape[0] * scale, shape[1] * scale)
    cell = (tile[0] + caption_lines * LINE + PAD, tile[1] + PAD)
    left = 0
    if row_labels:
        left = PAD + max(int(_font().getlength(str(n))) for n in row_labels) + 2 * PAD
    return Layout(scale, tile, cell, left, LINE + PAD if title else 0, columns)


def render(
    tiles: Sequence[np.ndarray | None],
    captions: Sequence[tuple[Sequence[str], bool] | None],
    *,
    columns: int,
    row_labels: Sequence[str] | None = None,
    title: str = "",
) -> np.ndarray:
    """Lays out tiles [H,W,C] (uint8 or [-1,1] floats; None = blank) -> sheet [h,w,3] uint8.

    Tiles fill rows of `columns`; captions[i] = (lines, highlight) or None; row_labels name
    the rows on the left; a title goes on top.
    """
    shape = next(t.shape for t in tiles if t is not None)
    lines = max((len(c[0]) for c in captions if c is not None), default=0)
    at = layout(shape, columns, lines, row_labels, title)
    n_rows = max(1, math.ceil(len(tiles) / columns))
    size = (at.left + columns * at.cell[1] + PAD, at.top + n_rows * at.cell[0] + PAD)
    sheet = Image.new("RGB", size, PAPER)
    draw, font = ImageDraw.Draw(sheet), _font()
    if title:
        draw.text((PAD, PAD // 2), title, fill=INK, font=font)
    for r, name in enumerate(row_labels or ()):
        y = at.origin(r * columns)[1] + at.tile[0] // 2 - FONT_SIZE // 2
        draw.text((PAD, y), str(name), fill=INK, font=font)
    for i, tile in enumerate(tiles):
        x, y = at.origin(i)
        if tile is None:
            draw.rectangle((x, y, x + at.tile[1] - 1, y + at.tile[0] - 1), fill=BLANK)
            continue
        image = tile if tile.dtype == np.uint8 else io.to_uint8(tile)
        sheet.paste(_upscale(image, at.scale), (x, y))
        if captions[i] is not None:
            text, highlight = captions[i]
            for k, line in enumerate(text):
                colour = MISMATCH if highlight and k == len(text) - 1 else INK
                draw.text((x, y + at.tile[0] + 1 + k * LINE), line, fill=colour, font=font)
    return np.asarray(sheet)


def save(path: str | os.PathLike, sheet: np.ndarray) -> Path:
    """Writes a rendered sheet as a PNG, atomically."""
    return io.save_png(path, sheet)


def rows_sheet(
    data: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    columns: int = 8,
    title: str = "",
) -> Path:
    """One sheet of a dataset's rows (read from `data`), hardest first, captioned."""
    ordered = hardest_first(rows)
    tiles = [io.load_png(Path(data) / r["file_name"]) for r in ordered]
    return save(path, render(tiles, [caption(r) for r in ordered], columns=columns, title=title))


def class_rows_sheet(
    images: Mapping[int, Sequence[np.ndarray]],
    row_captions: Mapping[int, Sequence[tuple[Sequence[str], bool]]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    columns: int,
    title: str = "",
) -> Path:
    """One row per class (labelled with its name) of its tiles; short rows padded blank."""
    tiles: list[np.ndarray | None] = []
    captions: list[tuple[Sequence[str], bool] | None] = []
    for k in sorted(images):
        row, caps = list(images[k])[:columns], list(row_captions[k])[:columns]
        tiles += row + [None] * (columns - len(row))
        captions += caps + [None] * (columns - len(caps))
    labels = [str(class_names[k]) for k in sorted(images)]
    return save(path, render(tiles, captions, columns=columns, row_labels=labels, title=title))
