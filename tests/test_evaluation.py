"""Evaluation and metrics: accuracy by group, AUROCs, batching, histograms, JSON lines, tables."""

import json

import numpy as np
import pytest

from ltg_jax import evaluation, metrics
from ltg_jax.data import fashion_mnist


def test_accuracy_report_by_group_and_class():
    labels = np.repeat(np.arange(10), 2)  # two images per class
    predictions = labels.copy()
    predictions[[0, 14, 16, 18]] = 5  # one wrong in class 0; one in each few class 7, 8, 9
    report = evaluation.accuracy_report(
        labels, predictions, fashion_mnist.CLASS_NAMES, fashion_mnist.GROUPS
    )
    assert report["overall"] == pytest.approx(16 / 20)
    assert report["many"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert report["medium"] == pytest.approx(1.0)
    assert report["few"] == pytest.approx(0.5)
    assert report["per_class"][fashion_mnist.CLASS_NAMES[0]] == pytest.approx(0.5)
    # Where the errors went: half of class 0 (and of each few class) became Sandal.
    confused = report["confused_with"]
    assert confused["T-shirt/top"] == {"Sandal": 0.5} == confused["Ankle boot"]
    assert confused["Trouser"] == {}
    rows = evaluation.per_class_rows(report)
    assert [r["group"] for r in rows[6:8]] == ["medium", "few"]


def test_auroc_orders_and_nan_when_one_class_is_missing():
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    assert evaluation.auroc(scores, [0, 0, 1, 1]) == 1.0
    assert evaluation.auroc(-scores, [0, 0, 1, 1]) == 0.0
    assert np.isnan(evaluation.auroc(scores, [1, 1, 1, 1]))


def test_signal_aurocs_few_vs_many_ignores_medium_classes():
    labels = np.array([0, 1, 4, 5, 7, 8])  # many, many, medium, medium, few, few
    predictions = np.array([0, 1, 4, 4, 7, 0])  # class 5 and class 8 wrong
    signal = np.array([0.0, 0.1, 5.0, 6.0, 0.9, 1.0])  # medium highest: must not count
    result = evaluation.signal_aurocs(
        {"entropy": signal}, labels, predictions, fashion_mnist.GROUPS
    )
    assert result["entropy"]["few_vs_many"] == 1.0
    # wrong = {5: 6.0, 8: 1.0}; right = {0, 0.1, 5.0, 0.9}: 7 of 8 pairs ordered
    assert result["entropy"]["misclassified_vs_correct"] == pytest.approx(7 / 8)


def test_batched_apply_pads_the_last_batch_and_trims_it():
    images = np.arange(7, dtype=np.float32).reshape(7, 1, 1, 1)
    sizes = []

    def fn(batch):
        sizes.append(len(batch))
        return {"sum": batch.reshape(len(batch), -1).sum(1)}

    out = evaluation.batched_apply(fn, images, batch_size=3)
    assert sizes == [3, 3, 3]  # fixed shapes: one compile
    np.testing.assert_array_equal(out["sum"], np.arange(7))


def test_histograms_png_is_written(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    signals = {"entropy": rng.normal(size=200), "epistemic": rng.random(200)}
    path = evaluation.plot_signal_histograms(
        tmp_path / "h.png", signals, labels, labels[::-1], fashion_mnist.GROUPS
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_writer_writes_json_lines_on_process_zero_only(tmp_path):
    writer = metrics.MetricsWriter(tmp_path)
    writer.write(3, loss=np.float32(0.5), accuracy=1)
    writer.write(4, loss=0.25)
    rows = [json.loads(line) for line in (tmp_path / metrics.METRICS_FILE).read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(3, 0.5), (4, 0.25)]
    other = metrics.MetricsWriter(tmp_path / "p1", process_index=1)
    other.write(1, loss=1.0)
    assert not (tmp_path / "p1").exists()


def test_format_table_aligns_columns():
    text = metrics.format_table([{"name": "a", "x": 0.5}, {"name": "bbb", "x": 0.25}])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "x"]
    assert lines[2:] == ["a     0.5000", "bbb   0.2500"]  # text left, numbers right
