"""The review page: one self-contained HTML file per synthetic dataset, for a person to judge.

No server and no internet: styles, script and the samples' metadata are inline, and the
images are the dataset's own PNGs, referenced by relative path (the page sits beside the
data, e.g. <mining workdir>/review/ltg.html -> ../synthetic/ltg/data/...). In the page:

- filter by class, decision and signal range; sort by signal, index or predicted probability;
- accept / reject / flag each sample with its buttons or the keys a / r / f (u clears;
  arrows or j / k move; n edits the note), and a free-text note per sample;
- progress: "n reviewed of N";
- Export writes `manifest_<name>.csv` (file_name, decision, note for every sample; the
  undecided as `unreviewed`), the format `load_synthetic` and the mining loop read;
- decisions persist in the browser (localStorage) and a page written with a manifest
  (`sample.review --config.manifest=...`) opens with its decisions; Import reads one too.

Decisions for training: accept and unreviewed keep a sample (as without review), reject and
flag hold it out (a flag asks for a second look; its note says why).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ltg_jax import assets, io
from ltg_jax.data import synthetic

TEMPLATE = assets.ASSETS / "review_page.html"  # __TITLE__ and __DATA__ are filled in


def manifest_name(name: str) -> str:
    """The file name the page's Export downloads for dataset `name`."""
    return f"manifest_{name}.csv"


def page_item(row: Mapping[str, Any], src: str) -> dict[str, Any]:
    """What the page shows of one metadata row (`src`: the image URL relative to the page)."""
    signal = row.get("signals", {}).get("guidance")
    item = {
        "file": row["file_name"],
        "src": src,
        "class_id": int(row["class_id"]),
        "index": int(row["index"]),
        "signal": None if signal is None else float(signal),
        "signals": {k: float(v) for k, v in row.get("signals", {}).items()},
        "guidance": str(row.get("guidance", "")),
        "w": float(row.get("w", 0.0)),
        "seed": int(row.get("seed", 0)),
        "label": str(row.get("label", row["class_name"])),
    }
    if "predicted_class" in row:
        item["predicted"] = str(row.get("predicted_name", row["predicted_class"]))
        item["predicted_prob"] = float(row["predicted_prob"])
        item["mismatch"] = int(row["predicted_class"]) != int(row["class_id"])
    if "oracle_class" in row:
        item["oracle"] = str(row.get("oracle_name", row["oracle_class"]))
        item["oracle_prob"] = float(row["oracle_prob"])
        item["oracle_agrees"] = bool(row["oracle_agrees"])
    return item


def dataset_id(rows: Sequence[Mapping[str, Any]], name: str) -> str:
    """A stable key for the browser's saved decisions: the dataset's name and files."""
    digest = hashlib.sha256("\n".join(r["file_name"] for r in rows).encode()).hexdigest()
    return f"{name}:{digest[:16]}"


def _script_json(value: Any) -> str:
    """JSON safe to inline in a <script> element."""
    return io.dumps(value).replace("</", "<\\/")


def page_html(
    rows: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    image_prefix: str,
    *,
    name: str,
    title: str,
    decisions: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The page's HTML for a dataset's rows; images at `image_prefix` + file_name."""
    prefix = image_prefix.rstrip("/") + "/" if image_prefix else ""
    data = {
        "name": name,
        "title": title,
        "id": dataset_id(rows, name),
        "manifest": manifest_name(name),
        "classes": [str(c) for c in class_names],
        "items": [page_item(r, prefix + r["file_name"]) for r in rows],
        "decisions": dict(decisions or {}),
    }
    html = TEMPLATE.read_text(encoding="utf-8")
    return html.replace("__TITLE__", _escape(title)).replace("__DATA__", _script_json(data))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_page(
    path: str | os.PathLike,
    data_root: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    *,
    name: str,
    title: str,
    manifest: str | os.PathLike | None = None,
) -> Path:
    """Writes the page at `path` for the dataset at `data_root` (images linked relatively).

    `manifest`: an earlier export (or any manifest) whose decisions the page opens with.
    """
    path = Path(path)
    prefix = Path(os.path.relpath(Path(data_root).resolve(), path.parent.resolve())).as_posix()
    seeded = synthetic.manifest_decisions(manifest, rows) if manifest else {}
    html = page_html(rows, class_names, prefix, name=name, title=title, decisions=seeded)
    return io.atomic_write_text(path, html)
