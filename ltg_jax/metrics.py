"""Metrics as JSON lines (written by process 0 only) and plain-text tables for the console."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ltg_jax import io

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Appends {'step', 'time', **scalars} rows to `workdir/metrics.jsonl` on process 0."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        filename: str = METRICS_FILE,
        process_index: int | None = None,
    ):
        self.path = Path(workdir) / filename
        index = jax.process_index() if process_index is None else process_index
        self.active = index == 0  # one writer: every process would hold the same numbers

    def write(self, step: int, **scalars: Any) -> None:
        """Writes one row; jax/numpy scalars become floats."""
        if not self.active:
            return
        row = {"step": int(step), "time": time.time()}
        row.update({k: _plain(v) for k, v in scalars.items()})
        io.append_jsonl(self.path, [row])


def _plain(value: Any) -> Any:
    array = np.asarray(value)
    if array.ndim == 0 and np.issubdtype(array.dtype, np.number):
        return array.item()
    return io.to_jsonable(value)


def _cell(value: Any, precision: int) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:.{precision}f}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def format_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, precision: int = 4
) -> str:
    """Rows of dicts -> an aligned text table (floats to `precision` places)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c, ""), precision) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    # Numbers right-aligned (digits line up), text left-aligned.
    numeric = [all(_is_number(row.get(c)) for row in rows) for c in columns]
    body = [
        "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(r, widths, numeric, strict=True)
        )
        for r in cells
    ]
    return "\n".join([line, rule, *body])


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    title: str | None = None,
    precision: int = 4,
) -> str:
    """Prints `format_table` on process 0 (with an optional title) and returns the text."""
    text = format_table(rows, columns, precision)
    if title:
        text = f"{title}\n{text}"
    if jax.process_index() == 0:
        print(text, flush=True)
    return text
