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


def _row_key(row: Mapping[str, Any]) -> tuple:
    """A row's identity: its step and which metrics it holds (not when it was written)."""
    return int(row["step"]), tuple(sorted(k for k in row if k not in ("step", "time")))


class MetricsWriter:
    """Appends {'step', 'time', **scalars} rows to `workdir/metrics.jsonl` on process 0.

    A resumed run redoes the steps after its checkpoint: `resume_step` drops the rows a killed
    run logged after that step, and a row written again for the same step and metrics replaces
    the old one, so the file holds each (step, metrics) once.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        filename: str = METRICS_FILE,
        process_index: int | None = None,
        resume_step: int | None = None,
    ):
        self.path = Path(workdir) / filename
        index = jax.process_index() if process_index is None else process_index
        self.active = index == 0  # one writer: every process would hold the same numbers
        text = self.path.read_text() if self.active and self.path.exists() else ""
        rows = io.read_jsonl(self.path) if text else []
        kept = [r for r in rows if resume_step is None or int(r["step"]) <= resume_step]
        if len(kept) < len(rows) or (text and not text.endswith("\n")):  # or a torn line
            self._rewrite(kept)
        self._written = {_row_key(r) for r in kept}

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        io.atomic_write_text(self.path, "".join(io.dumps(r) + "\n" for r in rows))

    def write(self, step: int, **scalars: Any) -> None:
        """Writes one row; jax/numpy scalars become floats."""
        if not self.active:
            return
        row = {"step": int(step), "time": time.time()}
        row.update({k: _plain(v) for k, v in scalars.items()})
        key = _row_key(row)
        if key in self._written:  # written before a restart: replace, never duplicate
            self._rewrite([r for r in io.read_jsonl(self.path) if _row_key(r) != key])
        io.append_jsonl(self.path, [row])
        self._written.add(key)


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
