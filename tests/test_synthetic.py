"""The synthetic dataset: layout, crash-safe metadata, the reader and manifest filtering."""

import json

import numpy as np
import pytest

from ltg_jax import io
from ltg_jax.data import synthetic


def make_dataset(root, n=6, classes=((0, "T-shirt/top"), (3, "Dress"))):
    """n samples alternating between two classes; image k is constant (k - 3) / 4."""
    meta = synthetic.metadata_path(root)
    for k in range(n):
        cid, name = classes[k % 2]
        row = synthetic.sample_row(
            index=k,
            class_id=cid,
            class_name=name,
            label=name,
            seed=0,
            guidance="entropy",
            w=2.0,
            signals={"entropy": 0.1 * k, "guidance": 0.1 * k},
            model_hash="m",
            predictor_hash="p",
        )
        synthetic.write_sample(root, np.full((32, 32, 1), (k - 3) / 4, np.float32), row, meta)
    return meta


def test_layout_and_rows(tmp_path):
    make_dataset(tmp_path)
    assert (tmp_path / "000_t_shirt_top" / "0000000.png").is_file()
    assert (tmp_path / "003_dress" / "0000005.png").is_file()
    rows = synthetic.read_rows(tmp_path)
    assert [r["index"] for r in rows] == list(range(6))
    assert rows[1]["file_name"] == "003_dress/0000001.png" and rows[1]["class_name"] == "Dress"


def test_reader_returns_arrays_in_range(tmp_path):
    make_dataset(tmp_path)
    data = synthetic.load_synthetic(tmp_path)
    assert data.images.shape == (6, 32, 32, 1) and data.images.dtype == np.float32
    np.testing.assert_array_equal(data.labels, [0, 3, 0, 3, 0, 3])
    assert data.images.min() >= -1 and data.images.max() <= 1
    np.testing.assert_allclose(
        data.images[:, 0, 0, 0], (np.arange(6) - 3) / 4, atol=0.004
    )  # 8-bit PNG


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    meta = make_dataset(tmp_path, n=3)
    with meta.open("a") as f:
        f.write('{"file_name": "000_t_shirt_top/0000003.png", "ind')  # killed mid-line
    assert [r["index"] for r in synthetic.read_rows(tmp_path)] == [0, 1, 2]
    assert synthetic.repair_metadata(meta) == 3
    assert meta.read_text().endswith("}\n")
    make_dataset(tmp_path, n=4)  # appending after the repair gives whole lines only
    assert [r["index"] for r in synthetic.read_rows(tmp_path)] == [0, 1, 2, 3]


def test_parts_are_merged_sorted(tmp_path):
    for p in (1, 0):
        meta = synthetic.metadata_path(tmp_path, p, 2)
        io.append_jsonl(meta, [{"file_name": f"x/{i}.png", "index": i} for i in (p, p + 2)])
    rows = synthetic.finalize_metadata(tmp_path)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert not list(tmp_path.glob(synthetic.PART_GLOB))
    assert (tmp_path / synthetic.METADATA_FILE).read_text().count("\n") == 4


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("m.json", ["000_t_shirt_top/0000000.png", "0000001.png"], [0, 1]),
        ("m.json", {"reject": ["0000002.png"]}, [0, 1, 3, 4, 5]),
        ("m.json", {"accept": ["0000004.png", "0000005.png"], "reject": ["0000005.png"]}, [4]),
        ("m.csv", "file,decision\n0000000.png,accept\n0000003.png,reject\n0000005.png,1\n", [0, 5]),
        ("m.csv", "003_dress/0000003.png\n0000004.png\n", [3, 4]),
    ],
)
def test_manifest_filters(tmp_path, name, content, expected):
    make_dataset(tmp_path / "d")
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    data = synthetic.load_synthetic(tmp_path / "d", manifest=path)
    assert [r["index"] for r in data.rows] == expected
    assert data.images.shape[0] == len(expected)


@pytest.mark.parametrize("word", ["acept", ""])
def test_manifest_decision_typos_and_blanks_are_errors(tmp_path, word):
    make_dataset(tmp_path / "d")
    path = tmp_path / "m.csv"
    row = f"0000001.png,{word}" if word else "0000001.png"  # a typo, or no decision at all
    path.write_text(f"file_name,decision\n0000000.png,accept\n{row}\n")
    with pytest.raises(ValueError, match=rf"m.csv, line 3: decision '{word}' is none of accept"):
        synthetic.load_synthetic(tmp_path / "d", manifest=path)


def test_review_page_manifest_flag_and_unreviewed_words(tmp_path):
    """The review page's export: accept/unreviewed keep, reject/flag hold out; notes are read."""
    make_dataset(tmp_path / "d")
    rows = synthetic.read_rows(tmp_path / "d")
    files = [r["file_name"] for r in rows]
    path = tmp_path / "manifest_ltg.csv"
    path.write_text(
        "file_name,decision,note\n"
        f'{files[0]},accept,\n{files[1]},reject,"broken, no object"\n'
        f"{files[2]},flag,ask Ann\n{files[3]},unreviewed,\n"
    )
    kept = synthetic.load_synthetic(tmp_path / "d", manifest=path).rows
    assert [r["file_name"] for r in kept] == [files[0], files[3]]
    decisions = synthetic.manifest_decisions(path, rows)
    assert decisions[files[1]] == {"decision": "reject", "note": "broken, no object"}
    assert decisions[files[2]] == {"decision": "flag", "note": "ask Ann"}
    assert decisions[files[3]]["decision"] == "unreviewed"
    # A JSON list keeps only the listed files; {"reject": [...]} keeps all the others.
    (tmp_path / "a.json").write_text(json.dumps([files[1]]))
    assert synthetic.read_manifest(tmp_path / "a.json") == ([files[1]], [])
    (tmp_path / "r.json").write_text(json.dumps({"reject": [files[1]]}))
    assert synthetic.read_manifest(tmp_path / "r.json") == (None, [files[1]])


def test_manifest_unknown_names_are_an_error(tmp_path):
    make_dataset(tmp_path / "d")
    path = tmp_path / "m.json"
    path.write_text(json.dumps(["0000000.png", "cat/0000099.png"]))
    with pytest.raises(ValueError, match=r"1 name\(s\) are not in the dataset.*0000099"):
        synthetic.load_synthetic(tmp_path / "d", manifest=path)
    with pytest.raises(FileNotFoundError, match="no manifest"):
        synthetic.load_synthetic(tmp_path / "d", manifest=tmp_path / "nope.csv")


def test_missing_dataset_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="sample.ltg"):
        synthetic.load_synthetic(tmp_path)
