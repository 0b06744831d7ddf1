"""Evaluation: accuracy by frequency group and class, and how well each signal finds the tail."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from sklearn.metrics import roc_auc_score

from ltg_jax import io, metrics, predictor, workdirs
from ltg_jax.data import datasets

SIGNAL_ORDER = ("entropy", "energy", "max_softmax", "epistemic", "loss")


def batched_apply(
    fn: Callable[[np.ndarray], Mapping[str, Any]], images: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    """Runs fn on fixed-size batches (the last one padded, so one compile) and concatenates."""
    n = len(images)
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        valid = len(batch)
        if valid < batch_size:  # pad with copies of a real image: stays inside [-1, 1]
            batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - valid, axis=0)])
        for key, value in fn(batch).items():
            outputs.setdefault(key, []).append(np.asarray(value)[:valid])
    return {key: np.concatenate(parts) for key, parts in outputs.items()}


def accuracy_report(
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: Sequence[str],
    groups: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Overall, per-group (many/medium/few: mean of class accuracies) and per-class accuracy.

    `groups` (a dataset descriptor's `groups()`) maps group name -> class ids; the report
    keeps the class order and each class's group, so `per_class_rows` needs nothing else.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    correct = labels == predictions
    per_class = {
        name: float(correct[labels == k].mean()) if np.any(labels == k) else float("nan")
        for k, name in enumerate(class_names)
    }
    by_index = list(per_class.values())
    report: dict[str, Any] = {"overall": float(correct.mean()), "count": int(labels.size)}
    for group, classes in (groups or {}).items():
        # Mean of per-class accuracies: the test set is balanced, so this equals the pooled one.
        report[group] = float(np.nanmean([by_index[k] for k in classes]))
    report["per_class"] = per_class
    report["confused_with"] = confusions(labels, predictions, class_names)
    report["class_names"] = list(class_names)
    report["class_groups"] = {class_names[k]: g for g, ks in (groups or {}).items() for k in ks}
    return report


def confusions(
    labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str], top: int = 2
) -> dict[str, dict[str, float]]:
    """Per class, where its errors go: the `top` wrong classes and the share of the class's
    examples predicted as each (what a per-class accuracy drop turns into)."""
    out = {}
    for k, name in enumerate(class_names):
        wrong = predictions[(labels == k) & (predictions != k)]
        counts = np.bincount(wrong, minlength=len(class_names))
        total = max(int(np.sum(labels == k)), 1)
        out[name] = {class_names[j]: float(counts[j] / total) for j in np.argsort(-counts)[:top]
                     if counts[j]}  # fmt: skip
    return out


def unscored_class_ids(
    unscored: Sequence[str], class_names: Sequence[str], field: str = "mode_unscored_classes"
) -> tuple[int, ...]:
    """Ids of the classes left out of the mode shares; unknown names are refused."""
    unknown = sorted(set(unscored) - set(class_names))
    if unknown:
        raise ValueError(
            f"--config.{field} names {unknown}, which are not classes of the predictor "
            f"{list(class_names)}"
        )
    return tuple(list(class_names).index(n) for n in unscored)


def mode_shares(
    modes: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    mode_names: Sequence[str],
    class_names: Sequence[str],
    unscored: Sequence[str] = (),
) -> dict[str, Any]:
    """Share of each mode among the generated and the kept samples, and per class.

    The overall shares leave out the `unscored` classes (those whose mode the mode oracle
    cannot tell, e.g. a square bag turned on its side); their per-class shares are kept.
    """

    def shares(picked: np.ndarray) -> dict[str, float | None]:
        m = modes[picked]
        return {n: float(np.mean(m == j)) if m.size else None for j, n in enumerate(mode_names)}

    scored = ~np.isin(labels, unscored_class_ids(unscored, class_names))
    return {
        "generated": shares(scored),
        "kept": shares(keep & scored),
        "per_class": {
            name: shares(labels == k) for k, name in enumerate(class_names) if np.any(labels == k)
        },
        "unscored_classes": list(unscored),
    }


def accuracy_rows(reports: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table rows (one per split) of overall and group accuracies."""
    return [
        {"split": split, **{k: r[k] for k in ("overall", "many", "medium", "few") if k in r}}
        for split, r in reports.items()
    ]


def per_class_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table rows (one per class) of a report's per-class accuracy and frequency group."""
    # By class index, not dict order: JSON files store the names sorted.
    group_of = report.get("class_groups", {})
    return [
        {"class": k, "name": name, "group": group_of.get(name, ""),
         "accuracy": report["per_class"][name]}
        for k, name in enumerate(report["class_names"])
        if name in report["per_class"]
    ]  # fmt: skip


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC of `scores` for finding the `positive` samples; NaN if one class is absent."""
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, np.asarray(scores, np.float64)))


def signal_aurocs(
    signals: Mapping[str, np.ndarray],
    labels: np.ndarray,
    predictions: np.ndarray,
    groups: Mapping[str, Sequence[int]],
) -> dict[str, dict[str, float]]:
    """Per signal: AUROC few-class vs many-class images, and misclassified vs correct images."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    few, many = np.isin(labels, groups["few"]), np.isin(labels, groups["many"])
    tail_or_head = few | many
    wrong = labels != predictions
    return {
        name: {
            "few_vs_many": auroc(np.asarray(values)[tail_or_head], few[tail_or_head]),
            "misclassified_vs_correct": auroc(values, wrong),
        }
        for name, values in _ordered(signals).items()
    }


def _ordered(signals: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [n for n in SIGNAL_ORDER if n in signals] + sorted(set(signals) - set(SIGNAL_ORDER))
    return {n: signals[n] for n in names}


def plot_signal_histograms(
    path: str | os.PathLike,
    signals: Mapping[str, np.ndarray],
    labels: np.ndarray,
    predictions: np.ndarray,
    groups: Mapping[str, Sequence[int]],
    bins: int = 50,
) -> Path:
    """PNG: per signal, histograms of many/medium/few-class and misclassified images."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on training machines
    import matplotlib.pyplot as plt

    signals = _ordered(signals)
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    fig, axes = plt.subplots(2, len(signals), figsize=(3.2 * len(signals), 5.6), squeeze=False)
    for col, (name, values) in enumerate(signals.items()):
        values = np.asarray(values, np.float64)
        edges = np.histogram_bin_edges(values, bins=bins)
        top, bottom = axes[0, col], axes[1, col]
        for group, classes in groups.items():
            top.hist(values[np.isin(labels, classes)], edges, density=True, alpha=0.5, label=group)
        wrong = labels != predictions
        bottom.hist(values[~wrong], edges, density=True, alpha=0.5, label="correct")
        bottom.hist(values[wrong], edges, density=True, alpha=0.5, label="misclassified")
        top.set_title(name)
        bottom.set_xlabel(name)
        for ax in (top, bottom):
            ax.legend(fontsize=7)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- signal evaluation run

AUROC_FILE = "signal_auroc.json"
HISTOGRAM_FILE = "signal_histograms.png"


def score_images(score, params, images: np.ndarray, labels: np.ndarray, batch_size: int):
    """{signal: [N]} plus 'logits' [N, K] over a whole array, in fixed-size batches."""
    labels = np.asarray(labels, np.int32)
    n, images = len(images), np.asarray(images)
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        batch_images = np.concatenate([images[start:stop], np.repeat(images[:1], pad, 0)])
        batch_labels = np.concatenate([labels[start:stop], np.repeat(labels[:1], pad, 0)])
        for key, value in score(params, batch_images, batch_labels).items():
            outputs.setdefault(key, []).append(np.asarray(value)[: stop - start])
    return {key: np.concatenate(parts) for key, parts in outputs.items()}


def run_signal_evaluation(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> dict[str, Any]:
    """Scores a split with a predictor bundle; writes the AUROC JSON, table and histograms."""
    workdir = Path(workdir)
    bundle = predictor.load_predictor_bundle(config.bundle)
    info = datasets.describe(config.data)
    arrays = datasets.load_split(config.data, config.split, int(config.max_examples))
    score = bundle.scorer(temperature=config.temperature, return_outputs=True)
    outputs = score_images(
        score, bundle.params, arrays["image"], arrays["label"], config.batch_size
    )
    predictions = np.argmax(outputs.pop("logits"), -1)
    outputs.pop("features")
    # 'loss' needs the true label, which a generated image's conditioning class plays at
    # sampling time; here it is the test label, so it is reported but is not label-free.
    aurocs = signal_aurocs(outputs, arrays["label"], predictions, info.groups())
    result = {
        "bundle": str(config.bundle),
        "split": config.split,
        "count": int(len(predictions)),
        "accuracy": accuracy_report(arrays["label"], predictions, info.class_names, info.groups()),
        "auroc": aurocs,
    }
    with workdirs.claim(workdir):
        if jax.process_index() == 0:
            io.atomic_write_json(workdir / AUROC_FILE, result)
            plot_signal_histograms(
                workdir / HISTOGRAM_FILE, outputs, arrays["label"], predictions, info.groups()
            )
    metrics.print_table(
        [{"signal": name, **values} for name, values in aurocs.items()],
        title=f"AUROC on {config.split} ({len(predictions)} images; higher = signal finds them)",
    )
    return result
