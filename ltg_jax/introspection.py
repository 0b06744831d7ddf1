"""Introspection without a VLM: the hardest generated samples per class, grouped by k-means.

A person names the failure modes: each cluster of a class's hardest samples (by the guidance
signal) in the predictor's feature space becomes one contact sheet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from ltg_jax import sheets


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
