"""Introspection: the hardest generated samples per class, grouped by k-means, described.

Each cluster of a class's hardest samples (by the guidance signal) in the predictor's feature
space becomes one annotated contact sheet, with measurable descriptors (brightness, object
size and position, ...) compared with reference samples of the class. Optionally a VLM
(any OpenAI-compatible endpoint, ltg_jax.vlm) says in words what a cluster shares and sums up
each class's blind spots; without one, nothing is captioned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from ltg_jax import descriptors, sheets, vlm


def hardest_indices(
    labels: np.ndarray, scores: np.ndarray, per_class: int
) -> dict[int, np.ndarray]:
    """{class id: rows [<= per_class]} of each class's highest-scoring samples, hardest first."""
    labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
    out = {}
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        # NaN (unscored) sorts as easiest; stable sort keeps index order among ties.
        key = np.where(np.isnan(scores[rows]), -np.inf, scores[rows])
        out[int(k)] = rows[np.argsort(-key, kind="stable")][:per_class]
    return out


def cluster_features(features: np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    """[N] k-means cluster id of features [N, D] (fewer clusters when N is small)."""
    n = len(features)
    k = max(1, min(int(num_clusters), n))
    if k == 1:
        return np.zeros(n, np.int32)
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(np.asarray(features, np.float64))
    return km.labels_.astype(np.int32)


def captions_of(rows: Sequence[Mapping[str, Any]] | None, picks: np.ndarray) -> list:
    """Tile captions (sheets.caption) of the picked rows; None each when there are no rows."""
    return [None if rows is None else sheets.caption(rows[i]) for i in picks]


def cluster_hardest(
    images: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    per_class: int,
    num_clusters: int,
    columns: int = 8,
    seed: int = 0,
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Clusters each class's hardest samples; one PNG per (class, cluster); returns the list.

    images [N,H,W,C] in [-1,1], features [N,D], labels [N], scores [N] (higher = harder),
    rows [N] the metadata rows (for captions). Each entry: class_id, class_name, cluster,
    size, mean_score, sheet (path relative to out_dir's parent), rows (indices into the
    inputs, hardest first).
    """
    out_dir = Path(out_dir)
    clusters = []
    for k, picks in sorted(hardest_indices(labels, scores, per_class).items()):
        assign = cluster_features(features[picks], num_clusters, seed)
        # Largest cluster first: the most common failure mode leads.
        order = sorted(np.unique(assign), key=lambda c: (-np.sum(assign == c), c))
        for rank, c in enumerate(order):
            members = picks[assign == c]  # still hardest first
            name = f"{k:03d}_cluster{rank}.png"
            mean_score = float(np.mean(scores[members]))
            sheets.save(
                out_dir / name,
                sheets.render(
                    list(images[members]), captions_of(rows, members), columns=columns,
                    title=f"{class_names[k]}, cluster {rank}: {members.size} of its hardest, "
                    f"mean signal {mean_score:.3g} (hardest first)",
                ),
            )  # fmt: skip
            clusters.append(
                {
                    "class_id": int(k),
                    "class_name": str(class_names[k]),
                    "cluster": rank,
                    "size": int(members.size),
                    "mean_score": mean_score,
                    "sheet": f"{out_dir.name}/{name}",
                    "rows": members.tolist(),
                }
            )
    return clusters


def hardest_sheet(
    images: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    path: str | os.PathLike,
    per_class: int,
    class_names: Sequence[str],
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """One PNG, a row per class (named) of its `per_class` hardest samples, hardest first."""
    hardest = hardest_indices(labels, scores, per_class)
    return sheets.class_rows_sheet(
        {k: list(images[picks]) for k, picks in hardest.items()},
        {k: captions_of(rows, picks) for k, picks in hardest.items()},
        class_names,
        path,
        columns=per_class,
        title=f"the {per_class} hardest samples of each class (highest signal first)",
    )


def summarize_clusters(clusters: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The cluster list without row indices (for report.json / report.md)."""
    return [{k: v for k, v in c.items() if k != "rows"} for c in clusters]


def describe_clusters(
    clusters: Sequence[dict[str, Any]],
    images: np.ndarray,
    references: Mapping[int, np.ndarray],
) -> None:
    """Adds 'descriptors' (means, z vs the class's references) and 'description' to each cluster.

    images [N,H,W,C] are the clustered samples (cluster 'rows' index them); references maps
    a class id to reference images [M,H,W,C] of that class (e.g. its unguided samples).
    """
    for c in clusters:
        ref = references.get(c["class_id"])
        members = images[np.asarray(c["rows"], np.int64)]
        described = descriptors.describe_groups(members, np.zeros(len(members), np.int32), ref)
        stats = described["groups"][0]
        c["descriptors"] = {
            "mean": {k: round(v, 4) for k, v in stats["mean"].items()},
            **({"z": {k: round(v, 2) for k, v in stats["z"].items()}} if "z" in stats else {}),
        }
        c["description"] = (
            descriptors.describe_in_words(stats, described["reference"])
            if described["reference"] is not None
            else "no reference samples of this class to compare with"
        )


def explain_with_vlm(
    config: vlm.VLMConfig,
    clusters: Sequence[dict[str, Any]],
    images: np.ndarray,
    references: Mapping[int, np.ndarray],
    *,
    per_cluster: int = 8,
    per_reference: int = 4,
) -> dict[str, str]:
    """Adds each cluster's 'vlm' answer; returns {class name: blind-spot summary}."""
    answers: dict[str, list[str]] = {}
    for c in clusters:
        ref = references.get(c["class_id"])
        if ref is None or not len(ref):
            continue  # the prompt compares with typical samples; none to show
        hard = list(images[np.asarray(c["rows"][:per_cluster], np.int64)])
        c["vlm"] = vlm.explain_cluster(config, c["class_name"], hard, list(ref[:per_reference]))
        answers.setdefault(c["class_name"], []).append(c["vlm"])
    return {name: vlm.summarize_blind_spots(config, name, texts) for name, texts in answers.items()}


def mode_isolation(clusters: Sequence[Mapping[str, Any]], is_rare: np.ndarray) -> dict[str, Any]:
    """How well the clusters of each class's hardest samples isolate a planted mode.

    `clusters` as `cluster_hardest` returns them (rows index `is_rare`, bool [N]). Per class,
    as slice-discovery benchmarks score planted slices: the cluster richest in the mode, its
    precision (the mode's share in it) and recall (its share of the class's hardest samples
    in the mode), next to the base rate (the mode's share of the class's hardest samples).
    """
    per_class = []
    for k in sorted({int(c["class_id"]) for c in clusters}):
        own = [c for c in clusters if int(c["class_id"]) == k]
        hardest = np.concatenate([np.asarray(c["rows"], np.int64) for c in own])
        total = int(is_rare[hardest].sum())
        best = max(own, key=lambda c: (float(np.mean(is_rare[np.asarray(c["rows"])])), -c["size"]))
        hits = int(is_rare[np.asarray(best["rows"], np.int64)].sum())
        per_class.append(
            {
                "class_id": k,
                "class_name": str(best["class_name"]),
                "cluster": int(best["cluster"]),
                "size": int(best["size"]),
                "precision": hits / int(best["size"]),
                "recall": hits / total if total else None,
                "base_rate": total / hardest.size,
            }
        )

    def mean(key: str) -> float | None:
        values = [r[key] for r in per_class if r[key] is not None]
        return float(np.mean(values)) if values else None

    return {
        "per_class": per_class,
        **{f"mean_{key}": mean(key) for key in ("precision", "recall", "base_rate")},
    }
