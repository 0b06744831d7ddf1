"""Exports of a synthetic dataset for reviewers' tools: HF imagefolder, Label Studio, FiftyOne.

Each exporter reads `<root>/<file_name>` images and their metadata rows (see
`ltg_jax.data.synthetic`) and writes one self-describing folder `out`:

    imagefolder    out/README.md (dataset card: features, ClassLabel names in class-id order)
                   out/train/metadata.jsonl + out/train/<file_name> (hard links, else copies)
    label_studio   out/tasks.json, out/label_config.xml, out/README.txt; the images stay in
                   `root` and are referenced as /data/local-files/?d=<path under document_root>
    fiftyone       out/metadata.json, out/samples.json, out/data/<file_name>, out/README.txt

FiftyOne format: `fiftyone.types.FiftyOneDataset` (metadata.json + samples.json + data/),
FiftyOne's own serialisation of a whole dataset and the one documented format that round-trips
what a reviewer filters on: every custom sample field with its type (float, int, bool, string;
declared in metadata.json's `sample_fields`) and real `Classification` labels (ground truth =
the class generated for; `prediction` and `oracle` with their confidences), plus the class
list. `FiftyOneImageClassificationDataset` and `ImageClassificationDirectoryTree` keep only
the label; `CSVDataset` reads every column back as a string and makes no `Classification`
unless each field gets a parser at import time. We write the format's original layout (no
"version" in metadata.json, also loadable as `fo.types.LegacyFiftyOneDataset`), which FiftyOne
still reads by building each sample with the public `Sample.from_dict`, so it assigns sample
and label ids itself. A versioned metadata.json is instead a raw dump of FiftyOne's database
documents; written by hand, its labels arrive without ids (checked with fiftyone 1.22.1).

The whole export is built in a staging folder beside `out` and swapped in at once, so `out`
is never half-written; `out` must be new, empty, or an earlier export (which is replaced).
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ltg_jax import io

Row = Mapping[str, Any]
MARKER = ".ltg-export"  # names the kind; an `out` holding it may be replaced by a new export
SPLIT = "train"
LS_TASKS, LS_CONFIG, README_TXT = "tasks.json", "label_config.xml", "README.txt"
LS_IMAGE, LS_CLASS, LS_NOTE = "image", "class", "note"  # the label config's tag names
LS_MODEL_VERSION = "ltg-conditioning"  # the prediction = the class the sample was made for
DEFAULT_DECISION = "unreviewed"
FO_FIELDS = "fiftyone.core.fields"
FO_LABELS = ("ground_truth", "prediction", "oracle")  # the Classification fields
FO_DATA = "data"  # the media folder of a FiftyOneDataset

# The flattened per-sample columns, in order, with their types (HF `datasets` dtype names).
# `signal_<name>` columns (float64) follow `w`. A column no row has is left out.
COLUMNS: dict[str, str] = {
    "class_name": "string",
    "prompt": "string",
    "index": "int64",
    "seed": "int64",
    "guidance": "string",
    "variant": "string",
    "w": "float64",
    "model_hash": "string",
    "predictor_hash": "string",
    "predicted_class": "int64",
    "predicted_name": "string",
    "predicted_prob": "float64",
    "oracle_class": "int64",
    "oracle_name": "string",
    "oracle_prob": "float64",
    "oracle_agrees": "bool",
    "decision": "string",
    "note": "string",
}
ALWAYS = ("class_name", "decision")  # columns kept even when no row sets them
FO_TYPES = {
    "string": "StringField",
    "int64": "IntField",
    "float64": "FloatField",
    "bool": "BooleanField",
}
CASTS: dict[str, Callable[[Any], Any]] = {
    "string": str,
    "int64": int,
    "float64": float,
    "bool": bool,
}


# ---------------------------------------------------------------- shared


def validate(
    root: str | os.PathLike, rows: Sequence[Row], class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Checks rows against the class names and the files under `root`; returns plain dicts."""
    root, names = Path(root), list(class_names)
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise ValueError("class_names must be the model's non-empty class names in class-id order")
    if len(set(names)) != len(names):
        dup = sorted(n for n, c in Counter(names).items() if c > 1)
        raise ValueError(f"class_names repeat {dup}; each class needs its own name")
    if not rows:
        raise ValueError(
            f"no rows to export from {root}; pass synthetic.read_rows(root) (or filter_rows)"
        )
    out, missing = [], []
    for row in rows:
        lacking = [k for k in ("file_name", "class_id", "class_name") if k not in row]
        if lacking:
            raise ValueError(f"a row lacks {lacking}: {dict(row)}; is this an LTG metadata row?")
        cid, file_name = int(row["class_id"]), str(row["file_name"])
        if not 0 <= cid < len(names):
            raise ValueError(
                f"{file_name}: class_id {cid} is outside the {len(names)} class names given; "
                "pass the model's full class list in class-id order"
            )
        if PurePosixPath(file_name).is_absolute() or ".." in PurePosixPath(file_name).parts:
            raise ValueError(f"file_name {file_name!r} must be a relative path inside {root}")
        if not (root / file_name).is_file():
            missing.append(file_name)
        out.append(dict(row))
    repeated = [f for f, c in Counter(r["file_name"] for r in out).items() if c > 1]
    if repeated:
        raise ValueError(f"rows repeat file_name {repeated[:3]}; pass one row per image")
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) of the rows are not under {root}, e.g. {missing[:3]}; "
            "point `root` at the dataset folder or drop those rows"
        )
    return out


def flat_row(row: Row) -> dict[str, Any]:
    """A metadata row as scalar columns (see COLUMNS); missing fields are None."""
    flat: dict[str, Any] = {k: row.get(k) for k in COLUMNS}
    flat["prompt"] = row.get("label")  # the prompt (text models) or class name (class models)
    flat["decision"] = row.get("decision") or DEFAULT_DECISION
    for name, value in (row.get("signals") or {}).items():
        flat[f"signal_{name}"] = value
    return flat


def column_types(flat_rows: Sequence[Row]) -> dict[str, str]:
    """The columns some row sets (plus ALWAYS), in COLUMNS order with signals after `w`."""
    signals = sorted({k for r in flat_rows for k in r if k.startswith("signal_")})
    order = list(COLUMNS)
    at = order.index("w") + 1
    order[at:at] = signals
    types = {**COLUMNS, **dict.fromkeys(signals, "float64")}
    present = {k for r in flat_rows for k, v in r.items() if v is not None}
    return {k: types[k] for k in order if k in present or k in ALWAYS}


def typed(flat: Row, types: Mapping[str, str]) -> dict[str, Any]:
    """One flat row with every column of `types`, each value cast to its type (None kept)."""
    return {k: None if flat.get(k) is None else CASTS[t](flat[k]) for k, t in types.items()}


def table(rows: Sequence[Row]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows -> (typed flat rows with the same columns, column types)."""
    flat = [flat_row(r) for r in rows]
    types = column_types(flat)
    return [typed(f, types) for f in flat], types


def link_or_copy(src: Path, dst: Path) -> Path:
    """Hard-links `src` at `dst` (no copy, same inode), copying atomically where links fail."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        io.atomic_write_bytes(dst, src.read_bytes())
    return dst


def summary(rows: Sequence[Row], key: str, limit: int = 8) -> str:
    """The distinct values of one field, e.g. 'epistemic' or '1.0, 2.0' ('-' if none)."""
    values = {r[key] for r in rows if r.get(key) is not None}
    shown = [str(v) for v in sorted(values, key=lambda v: (isinstance(v, str), v))]
    more = f", ... ({len(shown)} values)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more or "-"


def _check_out(out: Path) -> None:
    """Refuses an `out` that holds anything but an earlier export of ours."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise FileExistsError(
            f"{out} exists and is not an earlier export; pass a new or empty folder "
            "(an earlier export there is replaced)"
        )


def write_export(out: str | os.PathLike, kind: str, build: Callable[[Path], None]) -> Path:
    """Runs `build(staging)` in a fresh folder beside `out`, then swaps it in whole."""
    out = Path(out).absolute()
    _check_out(out)
    staging = out.with_name(f".{out.name}.ltg-staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        build(staging)
        io.atomic_write_text(staging / MARKER, kind + "\n")
        return io.replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ---------------------------------------------------------------- Hugging Face imagefolder


def _q(text: Any) -> str:
    """A YAML scalar: JSON's double-quoted string is valid YAML, whatever the text holds."""
    return io.dumps(str(text))


def features_yaml(class_names: Sequence[str], types: Mapping[str, str], indent: str) -> list[str]:
    """The features as YAML list lines: image, label (a ClassLabel of our names), the columns."""
    lines = [
        "- name: image",
        "  dtype: image",
        "- name: label",
        "  dtype:",
        "    class_label:",
        "      names:",
        *(f"        {_q(i)}: {_q(name)}" for i, name in enumerate(class_names)),
        *(line for k, t in types.items() for line in (f"- name: {k}", f"  dtype: {t}")),
    ]
    return [indent + line for line in lines]


def card_yaml(class_names: Sequence[str], types: Mapping[str, str]) -> str:
    """The card's YAML front matter: the train split and its features (ClassLabel names).

    `datasets` applies the features of the config (`configs[0].features`) when loading a
    folder; `dataset_info.features` alone is overridden by what it infers from metadata.jsonl.
    """
    lines = [
        "---",
        "task_categories:",
        "- image-classification",
        "tags:",
        "- synthetic",
        "- longtail-guidance",
        "configs:",
        "- config_name: default",
        "  data_files:",
        f"  - split: {SPLIT}",
        f"    path: {_q(SPLIT + '/**')}",
        "  features:",
        *features_yaml(class_names, types, "  "),
        "dataset_info:",
        "  features:",
        *features_yaml(class_names, types, "  "),
        "---",
    ]
    return "\n".join(lines) + "\n"


def card_body(rows: Sequence[Row], class_names: Sequence[str], types: Mapping[str, str]) -> str:
    """The card's text: what the data is, how it was made, counts per class, how to load it."""
    counts = Counter(int(r["class_id"]) for r in rows)
    decisions = Counter(flat_row(r)["decision"] for r in rows)
    empty = len(class_names) - len(counts)
    lines = [
        "# Longtail Guidance synthetic data",
        "",
        f"{len(rows)} images generated by Longtail Guidance (LTG): a class-conditional diffusion",
        "model steered towards samples a classifier finds rare or uncertain, by following the",
        "gradient of one of the classifier's signals.",
        "",
        f"- Signal followed (`guidance`): {summary(rows, 'guidance')}",
        f"- Guidance strength `w`: {summary(rows, 'w')}",
        f"- Seeds: {summary(rows, 'seed')}",
        f"- Diffusion model hash: {summary(rows, 'model_hash')}",
        f"- Predictor hash: {summary(rows, 'predictor_hash')}",
        "- Review decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(decisions.items())),
        "",
        "`label` is the class each image was generated for: a ClassLabel over all",
        f"{len(class_names)} classes of the model, in its class-id order. The predictor's verdict",
        "is in `predicted_*`, an independent oracle's (where one ran) in `oracle_*`, and the",
        "review's in `decision` (accept / reject / flag / unreviewed) and `note`.",
        "",
        "## Samples per class",
        "",
        "| id | class | samples |",
        "| --: | --- | --: |",
        *(f"| {c} | {class_names[c].replace('|', '/')} | {counts[c]} |" for c in sorted(counts)),
        "",
        f"{empty} of the {len(class_names)} classes have no samples." if empty else "",
        "",
        "## Columns",
        "",
        "`image`, `label` (class id), " + ", ".join(f"`{k}` ({t})" for k, t in types.items()),
        "",
        "## Load",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("path/to/this/folder", split="train")',
        'ds.features["label"].int2str(ds[0]["label"])  # the class name',
        "```",
    ]
    return "\n".join(lines) + "\n"


def export_imagefolder(
    root: str | os.PathLike, rows: Sequence[Row], class_names: Sequence[str], out: str | os.PathLike
) -> Path:
    """Writes a Hugging Face imagefolder (train split, metadata.jsonl, dataset card) at `out`."""
    root, names = Path(root), list(class_names)
    rows = validate(root, rows, names)
    flat, types = table(rows)

    def build(dst: Path) -> None:
        for row in rows:
            link_or_copy(root / row["file_name"], dst / SPLIT / row["file_name"])
        lines = [
            io.dumps({"file_name": r["file_name"], "label": int(r["class_id"]), **f}) + "\n"
            for r, f in zip(rows, flat, strict=True)
        ]
        io.atomic_write_text(dst / SPLIT / "metadata.jsonl", "".join(lines))
        card = card_yaml(names, types) + "\n" + card_body(rows, names, types)
        io.atomic_write_text(dst / "README.md", card)

    return write_export(out, "imagefolder", build)


# ---------------------------------------------------------------- Label Studio


def label_config(class_names: Sequence[str]) -> str:
    """The labeling config: the image, one Choice per class, and a TextArea for notes."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=LS_IMAGE, value=f"${LS_IMAGE}", zoom="true")
    ET.SubElement(view, "Header", value="Class shown (pre-filled: the class it was made for)")
    choices = ET.SubElement(
        view, "Choices", name=LS_CLASS, toName=LS_IMAGE, choice="single", showInLine="true"
    )
    for name in class_names:
        ET.SubElement(choices, "Choice", value=name)
    ET.SubElement(
        view, "TextArea", name=LS_NOTE, toName=LS_IMAGE, editable="true", maxSubmissions="1",
        rows="2", placeholder="Note: why reject or flag?",
    )  # fmt: skip
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def local_file_url(path: Path, document_root: Path) -> str:
    """Label Studio's local-file reference of `path`: /data/local-files/?d=<path under root>."""
    try:
        relative = path.resolve().relative_to(document_root.resolve())
    except ValueError:
        raise ValueError(
            f"{path} is not under document_root {document_root}; pass a document_root that "
            "holds the dataset (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)"
        ) from None
    return "/data/local-files/?d=" + quote(relative.as_posix(), safe="/")


def ls_task(row: Row, flat: Row, class_names: Sequence[str], image_url: str) -> dict[str, Any]:
    """One Label Studio task: the image, the sample's fields, the conditioning class pre-filled."""
    cid = int(row["class_id"])
    data = {LS_IMAGE: image_url, "file_name": row["file_name"], "class_id": cid}
    data |= {k: v for k, v in flat.items() if v is not None}
    result = [
        {"from_name": LS_CLASS, "to_name": LS_IMAGE, "type": "choices",
         "value": {"choices": [class_names[cid]]}},
    ]  # fmt: skip
    if flat.get("note"):
        result.append(
            {"from_name": LS_NOTE, "to_name": LS_IMAGE, "type": "textarea",
             "value": {"text": [flat["note"]]}}
        )  # fmt: skip
    return {"data": data, "predictions": [{"model_version": LS_MODEL_VERSION, "result": result}]}


def ls_readme(root: Path, document_root: Path, n: int) -> str:
    """How to import the tasks: env vars, project set-up, local storage, import."""
    root_abs, doc_abs = root.resolve(), document_root.resolve()
    title = f"Label Studio review of {n} Longtail Guidance samples"
    return f"""{title}
{"=" * len(title)}

Files: {LS_TASKS} (one task per image, with the sample's fields and a prediction that
pre-selects the class it was generated for), {LS_CONFIG} (the labeling interface).
The images are not copied: tasks point at them as /data/local-files/?d=<path under the
document root>, which Label Studio serves from this machine.

1. Start Label Studio with local files served from the document root:

     export LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true
     export LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={doc_abs}
     label-studio start

2. Create a project. Labeling Setup > Custom template > Code: paste {LS_CONFIG}.

3. Settings > Cloud Storage > Add Source Storage > Local files.
   Absolute local path: {root_abs}
   Import method: Tasks (not Files); leave the file filter blank.
   Click Save (not Save & Sync: the tasks come from {LS_TASKS}, not from the folder).
   Label Studio serves a local file only inside such a storage.

4. Import > upload {LS_TASKS}. Each task opens with the conditioning class selected:
   keep it (the image shows that class) or pick the class it does show; write a note.

Columns in the Data Manager: class_name, prompt, guidance (the signal followed), w,
signal_*, seed, predicted_name/predicted_prob, oracle_* (where an oracle ran), decision.
"""


def export_label_studio(
    root: str | os.PathLike,
    rows: Sequence[Row],
    class_names: Sequence[str],
    out: str | os.PathLike,
    document_root: str | os.PathLike | None = None,
) -> Path:
    """Writes Label Studio tasks (local-file images), their label config and a README at `out`."""
    root, names = Path(root), list(class_names)
    document_root = Path(document_root) if document_root is not None else root.resolve().parent
    rows = validate(root, rows, names)
    flat, _ = table(rows)
    tasks = [
        ls_task(r, f, names, local_file_url(root / r["file_name"], document_root))
        for r, f in zip(rows, flat, strict=True)
    ]

    def build(dst: Path) -> None:
        io.atomic_write_json(dst / LS_TASKS, tasks)
        io.atomic_write_text(dst / LS_CONFIG, label_config(names))
        io.atomic_write_text(dst / README_TXT, ls_readme(root, document_root, len(rows)))

    return write_export(out, "label_studio", build)


# ---------------------------------------------------------------- FiftyOne


def fo_classification(label: Any, confidence: Any = None) -> dict[str, Any] | None:
    """A serialised `fiftyone.core.labels.Classification` (None when there is no label)."""
    if label is None:
        return None
    value = {"_cls": "Classification", "tags": [], "label": str(label)}
    return value | ({} if confidence is None else {"confidence": float(confidence)})


def class_label(flat: Row, prefix: str, class_names: Sequence[str]) -> str | None:
    """`<prefix>_name`, else the name of `<prefix>_class` (None if neither is known)."""
    name, cid = flat.get(f"{prefix}_name"), flat.get(f"{prefix}_class")
    if name is None and cid is not None and 0 <= int(cid) < len(class_names):
        name = class_names[int(cid)]
    return name


def fo_sample(row: Row, flat: Row, class_names: Sequence[str]) -> dict[str, Any]:
    """One sample of samples.json: media path, Classifications and the flat custom fields."""
    cid = int(row["class_id"])
    predicted = class_label(flat, "predicted", class_names)
    oracle = class_label(flat, "oracle", class_names)
    return {
        "filepath": f"{FO_DATA}/{row['file_name']}",
        "tags": [],
        "metadata": None,
        "ground_truth": fo_classification(class_names[cid]),
        "prediction": fo_classification(predicted, flat.get("predicted_prob")),
        "oracle": fo_classification(oracle, flat.get("oracle_prob")),
        "class_id": cid,
        **{k: v for k, v in flat.items() if k != "class_name"},  # ground_truth holds it
    }


def fo_schema(types: Mapping[str, str]) -> dict[str, str]:
    """metadata.json's sample_fields: field name -> FiftyOne field type string."""
    label = f"{FO_FIELDS}.EmbeddedDocumentField(fiftyone.core.labels.Classification)"
    return {
        **dict.fromkeys(FO_LABELS, label),
        "class_id": f"{FO_FIELDS}.IntField",
        **{k: f"{FO_FIELDS}.{FO_TYPES[t]}" for k, t in types.items() if k != "class_name"},
    }


def fo_metadata(
    name: str, rows: Sequence[Row], class_names: Sequence[str], types: Mapping[str, str]
) -> dict[str, Any]:
    """metadata.json: name, media type, field schema and info (class list, provenance)."""
    info = {
        "default_classes": list(class_names),  # FiftyOne moves it to dataset.default_classes
        "description": f"{len(rows)} Longtail Guidance samples (ltg-jax export)",
        **{k: summary(rows, k) for k in ("guidance", "w", "model_hash", "predictor_hash")},
    }
    # No "version" key: FiftyOne then builds each sample with the public `Sample.from_dict`,
    # assigning ids itself (a versioned file is a raw database dump that must carry them).
    return {"name": name, "media_type": "image", "sample_fields": fo_schema(types), "info": info}


def fo_readme(out: Path, n: int) -> str:
    """How to load the export into FiftyOne (one call)."""
    title = f"FiftyOne dataset of {n} Longtail Guidance samples (format: FiftyOneDataset)"
    return f"""{title}
{"=" * len(title)}

load_fiftyone.py:

    import fiftyone as fo

    dataset = fo.Dataset.from_dir(
        dataset_dir="{out}",
        dataset_type=fo.types.FiftyOneDataset,
        name="ltg-review",  # any new name
    )
    session = fo.launch_app(dataset)

Fields: ground_truth (Classification: the class generated for), prediction (Classification:
the predictor's class and probability), oracle (Classification, where an oracle ran),
class_id, prompt, guidance (the signal followed), w, signal_*, seed, index, model_hash,
predictor_hash, predicted_class, oracle_class, oracle_agrees, decision, note.
Try: dataset.match(F("decision") == "unreviewed").sort_by("signal_guidance", reverse=True)
(with `from fiftyone import ViewField as F`).
"""


def export_fiftyone(
    root: str | os.PathLike, rows: Sequence[Row], class_names: Sequence[str], out: str | os.PathLike
) -> Path:
    """Writes a `fiftyone.types.FiftyOneDataset` folder (images linked) and a README at `out`."""
    root, names = Path(root), list(class_names)
    rows = validate(root, rows, names)
    flat, types = table(rows)
    samples = [fo_sample(r, f, names) for r, f in zip(rows, flat, strict=True)]
    final = Path(out).absolute()

    def build(dst: Path) -> None:
        for row in rows:
            link_or_copy(root / row["file_name"], dst / FO_DATA / row["file_name"])
        io.atomic_write_json(dst / "metadata.json", fo_metadata(final.name, rows, names, types))
        io.atomic_write_json(dst / "samples.json", {"samples": samples})
        io.atomic_write_text(dst / README_TXT, fo_readme(final, len(rows)))

    return write_export(final, "fiftyone", build)


# ---------------------------------------------------------------- dispatch

EXPORTERS: dict[str, Callable[..., Path]] = {
    "imagefolder": export_imagefolder,
    "label_studio": export_label_studio,
    "fiftyone": export_fiftyone,
}


def export(
    kind: str,
    root: str | os.PathLike,
    rows: Sequence[Row],
    class_names: Sequence[str],
    out: str | os.PathLike,
    **options: Any,
) -> Path:
    """Exports with the named exporter (EXPORTERS); `options` go to it (e.g. document_root)."""
    if kind not in EXPORTERS:
        raise ValueError(f"unknown export kind {kind!r}; choose one of {sorted(EXPORTERS)}")
    return EXPORTERS[kind](root, rows, class_names, out, **options)
