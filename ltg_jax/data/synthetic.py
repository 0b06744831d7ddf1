"""The synthetic dataset: class folders of PNGs + `metadata.jsonl` (the imagefolder convention).

    <root>/<class_folder>/<index:07d>.png      one generated sample, named by its global index
    <root>/metadata.jsonl                      one JSON row per sample (see `sample_row`)

Crash safety: a PNG is written atomically (temp + rename) *before* its metadata line is
appended, so a row never points at a missing file; a run killed mid-line leaves a torn last
line, which `repair_metadata` drops. On multi-host runs each process appends to its own part
file (`metadata-p00001.jsonl`) and process 0 merges them (`finalize_metadata`), sorted by index.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ltg_jax import io

METADATA_FILE = "metadata.jsonl"
# Review decisions a manifest may give, by what they do to a sample's use in training.
ACCEPT_WORDS = frozenset({"accept", "accepted", "1", "true", "yes"})
REJECT_WORDS = frozenset({"reject", "rejected", "0", "false", "no"})
FLAG_WORDS = frozenset({"flag", "flagged"})  # held out until someone looks again
UNREVIEWED_WORDS = frozenset({"unreviewed"})  # kept, as every sample is without review
PART_GLOB = "metadata-p*.jsonl"


class SyntheticData(NamedTuple):
    """A loaded synthetic dataset, sorted by global index."""

    images: np.ndarray  # [N, H, W, C] f32 in [-1, 1]
    labels: np.ndarray  # [N] int32 class ids
    rows: list[dict[str, Any]]  # the metadata row of each sample


def class_folder(class_id: int, class_name: str) -> str:
    """Folder of a class: '<id:03d>_<slug>' (sorts by id; the slug keeps it readable)."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(class_name).lower()).strip("_") or "class"
    return f"{int(class_id):03d}_{slug}"


def sample_file(class_id: int, class_name: str, index: int) -> str:
    """Path of sample `index` relative to the dataset root (POSIX separators)."""
    return f"{class_folder(class_id, class_name)}/{int(index):07d}.png"


def sample_row(
    *,
    index: int,
    class_id: int,
    class_name: str,
    label: str,
    seed: int,
    guidance: str,
    w: float,
    signals: Mapping[str, float],
    model_hash: str,
    predictor_hash: str,
    **extra: Any,
) -> dict[str, Any]:
    """The metadata row of one sample; `file_name` is the column imagefolder loaders read."""
    return {
        "file_name": sample_file(class_id, class_name, index),
        "class_id": int(class_id),
        "class_name": str(class_name),
        "label": str(label),  # the prompt (text models) or class name (class models)
        "index": int(index),
        "seed": int(seed),
        "guidance": str(guidance),
        "w": float(w),
        "signals": {k: float(v) for k, v in signals.items()},
        "model_hash": str(model_hash),
        "predictor_hash": str(predictor_hash),
        **extra,
    }


def metadata_path(root: str | os.PathLike, process_index: int = 0, process_count: int = 1) -> Path:
    """Where a process appends rows: metadata.jsonl alone, or its own part file when multi-host."""
    root = Path(root)
    if process_count == 1:
        return root / METADATA_FILE
    return root / f"metadata-p{process_index:05d}.jsonl"


def write_sample(
    root: str | os.PathLike, image: np.ndarray, row: Mapping[str, Any], metadata: Path
) -> None:
    """Writes one sample [H, W, C] in [-1, 1]: the PNG atomically, then its metadata line."""
    io.save_png(Path(root) / row["file_name"], image)
    append_rows(metadata, [row])


def append_rows(metadata: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Appends metadata rows, one fsynced line each (one small write, so torn lines are rare)."""
    io.append_jsonl(metadata, rows)


def repair_metadata(path: str | os.PathLike) -> int:
    """Drops a torn (unterminated) last line left by a killed run; returns rows kept."""
    path = Path(path)
    if not path.exists():
        return 0
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        io.atomic_write_text(path, text)
    return sum(1 for line in text.splitlines() if line.strip())


def read_rows(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete row of metadata.jsonl and any part files, one per index, sorted by index."""
    root = Path(root)
    rows: dict[int, dict[str, Any]] = {}
    for path in [root / METADATA_FILE, *sorted(root.glob(PART_GLOB))]:
        if not path.exists():
            continue
        lines = path.read_text().split("\n")
        # The last element is '' for a complete file, or a torn line of a killed writer.
        for line in lines[:-1]:
            if line.strip():
                row = json.loads(line)
                rows[int(row["index"])] = row
    return [rows[i] for i in sorted(rows)]


def finalize_metadata(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Rewrites metadata.jsonl as all rows sorted by index and removes the part files."""
    root = Path(root)
    rows = read_rows(root)
    text = "".join(io.dumps(r) + "\n" for r in rows)
    io.atomic_write_text(root / METADATA_FILE, text)
    for part in root.glob(PART_GLOB):
        part.unlink(missing_ok=True)
    return rows


# ---------------------------------------------------------------- reading


def canonical_decision(word: str, where: str) -> str:
    """A manifest's decision word -> 'accept' | 'reject' | 'flag' | 'unreviewed', or an error."""
    word = word.strip().lower()
    for canonical, words in (
        ("accept", ACCEPT_WORDS),
        ("reject", REJECT_WORDS),
        ("flag", FLAG_WORDS),
        ("unreviewed", UNREVIEWED_WORDS),
    ):
        if word in words:
            return canonical
    # A typo must not silently reject (or keep) a sample.
    raise ValueError(
        f"{where}: decision {word!r} is none of accept ({', '.join(sorted(ACCEPT_WORDS))}), "
        f"reject ({', '.join(sorted(REJECT_WORDS))}), flag or unreviewed; fix it or drop "
        "the line"
    )


def read_decisions(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(file, canonical decision, note) per entry of a JSON or CSV manifest.

    JSON: a list of accepted files, or {"accept": [...], "reject": [...]} (either optional).
    CSV: a `file_name` (or `file`) column, an optional `decision` column (see
    `canonical_decision`; any other word, or a blank, is an error naming the line) and an
    optional `note`; without a header, one accepted file per line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}; pass a JSON or CSV list of file names")
    if path.suffix.lower() == ".json":
        obj = io.read_json(path)
        if isinstance(obj, list):
            return [(str(f), "accept", "") for f in obj]
        if isinstance(obj, Mapping) and set(obj) <= {"accept", "reject"}:
            return [(str(f), word, "") for word in ("accept", "reject") for f in obj.get(word, [])]
        raise ValueError(
            f"{path}: expected a list of files or {{'accept': [...], 'reject': [...]}}"
        )
    with path.open(newline="") as f:
        table = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not table:
        return []
    header = [c.strip().lower() for c in table[0]]
    key = next((k for k in ("file_name", "file") if k in header), None)
    if key is None:
        return [(r[0].strip(), "accept", "") for r in table]
    col = header.index(key)
    dec, note = (header.index(k) if k in header else None for k in ("decision", "note"))
    out = []
    for line, r in enumerate(table[1:], start=2):
        # No decision column: the listed files are accepted. A missing cell reads as blank.
        word = "accept" if dec is None else (r[dec] if dec < len(r) else "")
        text = r[note] if note is not None and note < len(r) else ""
        out.append((r[col].strip(), canonical_decision(word, f"{path}, line {line}"), text))
    return out


def read_manifest(path: str | os.PathLike) -> tuple[list[str] | None, list[str]]:
    """(kept files or None = all but the held out, held-out files) of a manifest.

    Accepted and unreviewed files are kept; rejected and flagged ones are held out. A JSON
    {"reject": [...]} without "accept" keeps every other file; any other manifest keeps only
    the files it keeps.
    """
    entries = read_decisions(path)
    hold = [f for f, d, _ in entries if d in ("reject", "flag")]
    if Path(path).suffix.lower() == ".json":
        obj = io.read_json(path)
        if isinstance(obj, Mapping) and "accept" not in obj:
            return None, hold
    return [f for f, d, _ in entries if d in ("accept", "unreviewed")], hold


def manifest_decisions(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, str]]:
    """{file_name: {'decision', 'note'}} of a manifest, names resolved against the rows."""
    out = {}
    for name, decision, note in read_decisions(path):
        (file,) = _resolve([name], rows, Path(path))
        out[file] = {"decision": decision, "note": note}
    return out


def _resolve(names: Sequence[str], rows: Sequence[Mapping[str, Any]], manifest: Path) -> set[str]:
    """Manifest names (dataset-relative paths or unique base names) -> dataset file_name values."""
    files = {r["file_name"] for r in rows}
    by_base: dict[str, list[str]] = {}
    for f in files:
        by_base.setdefault(f.rsplit("/", 1)[-1], []).append(f)
    out, unknown = set(), []
    for name in names:
        name = name.replace("\\", "/").removeprefix("./")
        if name in files:
            out.add(name)
        elif len(by_base.get(name, [])) == 1:
            out.add(by_base[name][0])
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"{manifest}: {len(unknown)} name(s) are not in the dataset, e.g. {unknown[:5]}; "
            "use the `file_name` values of metadata.jsonl (e.g. '000_t_shirt_top/0000000.png')"
        )
    return out


def filter_rows(
    rows: Sequence[Mapping[str, Any]], manifest: str | os.PathLike
) -> list[dict[str, Any]]:
    """The rows an accept/reject manifest keeps (accepted, or all but the rejected)."""
    accept, reject = read_manifest(manifest)
    keep = (
        {r["file_name"] for r in rows} if accept is None else _resolve(accept, rows, Path(manifest))
    )
    keep -= _resolve(reject, rows, Path(manifest))
    return [dict(r) for r in rows if r["file_name"] in keep]


def load_synthetic(
    root: str | os.PathLike, manifest: str | os.PathLike | None = None
) -> SyntheticData:
    """Images [N,H,W,C] f32 in [-1,1], labels [N] and rows of a dataset (optionally filtered)."""
    root = Path(root)
    if not (root / METADATA_FILE).is_file() and not any(root.glob(PART_GLOB)):
        raise FileNotFoundError(
            f"no {METADATA_FILE} in {root}; point at the data/ folder an LTG run wrote "
            "(`python -m sample.ltg --workdir W` writes W/data)"
        )
    rows = read_rows(root)
    if manifest is not None:
        rows = filter_rows(rows, manifest)
    if not rows:
        return SyntheticData(np.zeros((0, 0, 0, 0), np.float32), np.zeros((0,), np.int32), [])
    images = np.stack([io.load_png(root / r["file_name"]) for r in rows]).astype(np.float32)
    labels = np.asarray([r["class_id"] for r in rows], np.int32)
    return SyntheticData(images / 127.5 - 1.0, labels, rows)
