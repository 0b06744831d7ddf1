"""`sample.review`: the review page and exports of one synthetic dataset (configs/review.py).

Reads the dataset's rows, adds the oracle's verdict when an oracle is given, and writes
<workdir>/<name>.html (review_page.py) and <workdir>/exports/<kind>/ (exports.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ltg_jax import checks, exports, io, ltg_sampling, review_page, workdirs
from ltg_jax.data import synthetic

EXPORTS_DIR = "exports"


def dataset_root(path: str | os.PathLike) -> Path:
    """The folder holding metadata.jsonl: `path` itself or its data/ (an LTG run's workdir)."""
    path = Path(str(path))
    if not str(path).strip() or str(path) == ".":
        raise ValueError(
            "--config.data is empty; point it at a synthetic dataset (the data/ folder, or "
            "the workdir, of `python -m sample.ltg`)"
        )
    for root in (path, path / ltg_sampling.DATA_DIR):
        if (root / synthetic.METADATA_FILE).is_file():
            return root
    raise FileNotFoundError(
        f"--config.data={path}: no {synthetic.METADATA_FILE} there or in its "
        f"{ltg_sampling.DATA_DIR}/; point it at what `python -m sample.ltg --workdir W` wrote"
    )


def class_names_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Class names in id order from the rows (ids no row has are named 'class <id>')."""
    names = {int(r["class_id"]): str(r["class_name"]) for r in rows}
    return [names.get(k, f"class {k}") for k in range(max(names) + 1)] if names else []


def with_oracle(
    rows: Sequence[Mapping[str, Any]], root: Path, oracle_spec: str, batch_size: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows with the oracle's verdict, and the oracle's class names (the dataset's ids)."""
    from ltg_jax import mining  # the oracle's scoring lives with the mining loop's review

    oracle = ltg_sampling.load_bundle(oracle_spec, "oracle")
    names = list(oracle.class_names)
    bad = sorted({(int(r["class_id"]), str(r["class_name"])) for r in rows} - set(enumerate(names)))
    if bad:
        raise ValueError(
            f"--config.oracle: its classes {names} do not match the dataset's {bad[:5]}; "
            "use an oracle of the dataset's label set, in its class order"
        )
    images = np.stack([io.load_png(root / r["file_name"]) for r in rows]).astype(np.float32)
    # The bundle's input adapter maps the generated images to what the oracle takes.
    probs = mining.oracle_probs(oracle, images / 127.5 - 1.0, batch_size)
    return [
        dict(r) | mining.oracle_verdict(p, int(r["class_id"]), names)
        for r, p in zip(rows, probs, strict=True)
    ], names


def run_review(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Writes the page and the exports; returns {'page', 'exports', 'samples'}."""
    checks.check_config_finite(config)
    root = dataset_root(config.data)
    rows = synthetic.read_rows(root)
    kinds = ltg_sampling.config_names(config.exports)
    unknown = sorted(set(kinds) - set(exports.EXPORTERS))
    if unknown:
        raise ValueError(
            f"--config.exports: unknown {unknown}; choose from {sorted(exports.EXPORTERS)}"
        )
    if str(config.manifest):
        synthetic.manifest_decisions(str(config.manifest), rows)  # fails now, naming the line
    names = class_names_of(rows)
    if str(config.oracle):
        rows, names = with_oracle(rows, root, str(config.oracle), int(config.batch_size))
    name = str(config.name) or (
        root.parent.name if root.name == ltg_sampling.DATA_DIR else root.name
    )
    workdir = Path(workdir)
    with workdirs.claim(workdir):
        page = review_page.write_page(
            workdir / f"{name}.html", root, rows, names, name=name,
            manifest=str(config.manifest) or None,
            title=f"{name}: {len(rows)} generated samples - review, then export the manifest",
        )  # fmt: skip
        done = {
            kind: str(exports.export(kind, root, rows, names, workdir / EXPORTS_DIR / kind))
            for kind in kinds
        }
    return {"page": str(page), "exports": done, "samples": len(rows)}
