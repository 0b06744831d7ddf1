"""Class fidelity of a class-conditional diffusion model, judged by the oracle classifier.

Draws `per_class` samples of every class from a diffusers-format folder (the sampler with
guidance off), lets the oracle (a classifier trained on the full balanced data) label them,
and reports how often it agrees with the conditioning class, overall and per class. With a
mode oracle (`config.mode_oracle`, e.g. the world benchmark's upright / rotated classifier) it
also reports each mode's share of the samples, overall and per class. Batches are recorded as
they finish, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from ltg_jax import (
    checkpointing,
    checks,
    diffusion,
    evaluation,
    io,
    ltg_sampling,
    metrics,
    parallel,
    sampling,
    weights,
    workdirs,
)
from ltg_jax import predictor as predictor_lib

BATCHES_FILE = "fidelity_batches.jsonl"
GRID_FILE = "grid_rows.npz"


def oracle_classifier(bundle: predictor_lib.PredictorBundle) -> Callable[[np.ndarray], np.ndarray]:
    """images [N,H,W,C] in [-1,1] -> the oracle's class [N]; compiled once, reused per batch."""
    forward, params = jax.jit(bundle.adapted_apply), bundle.params["predictor"]
    return lambda images: np.asarray(forward(params, images)[1]).argmax(-1)


def class_major_labels(num_classes: int, per_class: int) -> np.ndarray:
    """[num_classes * per_class] conditioning labels, class 0's samples first."""
    return np.repeat(np.arange(num_classes, dtype=np.int32), per_class)


def _done_batches(workdir: Path) -> dict[int, dict[str, Any]]:
    return {row["batch"]: row for row in io.read_jsonl(workdir / BATCHES_FILE)}


def run_fidelity(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Samples, labels with the oracle, writes `fidelity.json` and `samples_per_class.png`."""
    workdir = Path(workdir)
    # Every key that fixes which sample lands in which batch, or what a batch records: a
    # resume must not mix plans.
    shape_keys = ("model_dir", "oracle_bundle", "mode_oracle", "sample", "seed", "per_class",
                  "batch_size")  # fmt: skip
    checks.check_config_finite(config)
    pipe = weights.load_pipeline(config.model_dir)
    if pipe.class_embedder is None:
        raise ValueError(
            f"{config.model_dir} has no class_embedder/: fidelity needs a class-conditional "
            "model such as the shipped Fashion-MNIST LDM."
        )
    oracle = predictor_lib.load_predictor(config.oracle_bundle)  # a bundle or a factory
    classify = oracle_classifier(oracle)
    mode_oracle = (
        predictor_lib.load_predictor(config.mode_oracle) if str(config.mode_oracle) else None
    )
    classify_mode = oracle_classifier(mode_oracle) if mode_oracle else None
    unscored = ltg_sampling.config_names(config.mode_unscored_classes)
    evaluation.unscored_class_ids(unscored, oracle.class_names)  # refused before sampling
    num_classes = pipe.class_embedder.num_classes
    labels = class_major_labels(num_classes, int(config.per_class))
    batch = int(config.batch_size)
    if labels.size % batch:
        raise ValueError(
            f"{labels.size} samples do not split into batches of {batch}; choose a batch_size "
            f"that divides num_classes * per_class."
        )
    with workdirs.claim(workdir):  # every input checked above: now write
        checkpointing.save_config(workdir, config, shape_keys=shape_keys)
        sampler = sampling.make_sampler(
            {
                "scheduler": pipe.scheduler_config,
                "num_steps": int(config.sample.num_steps),
                "cfg_scale": float(config.sample.cfg_scale),
            },
            diffusion.class_conditional_models(pipe),
        )
        params = diffusion.pipeline_params(pipe)
        rng = jax.random.key(int(config.seed))
        done = _done_batches(workdir)
        grid_path = workdir / GRID_FILE
        grid = dict(np.load(grid_path)) if grid_path.is_file() else {}
        per_grid = int(config.grid_per_class)
        tic = time.time()
        for b in tqdm(
            range(labels.size // batch), desc="fidelity", disable=not parallel.is_process_zero()
        ):
            if b in done:
                continue
            indices = np.arange(b * batch, (b + 1) * batch, dtype=np.int32)
            images = np.asarray(sampler(params, indices, labels[indices], rng).images)
            predictions = classify(images)
            for k in np.unique(labels[indices]):
                key = str(k)
                have = len(grid.get(key, ()))
                if have < per_grid:
                    new = images[labels[indices] == k][: per_grid - have]
                    grid[key] = np.concatenate([grid[key], new]) if key in grid else new
            io.atomic_save_npz(grid_path, **grid)
            row = {"batch": b, "labels": labels[indices], "predictions": predictions}
            if classify_mode:
                row["modes"] = classify_mode(images)
            io.append_jsonl(workdir / BATCHES_FILE, [row])
            done[b] = io.to_jsonable(row)
        all_labels = np.concatenate([np.asarray(done[b]["labels"]) for b in sorted(done)])
        all_predictions = np.concatenate([np.asarray(done[b]["predictions"]) for b in sorted(done)])
        report = evaluation.accuracy_report(all_labels, all_predictions, oracle.class_names)
        if mode_oracle:
            modes = np.concatenate([np.asarray(done[b]["modes"]) for b in sorted(done)])
            shares = evaluation.mode_shares(
                modes, all_labels, np.ones(modes.size, bool), mode_oracle.class_names,
                oracle.class_names, unscored,
            )  # fmt: skip
            report["modes"] = {
                "overall": shares["generated"],  # without the unscored classes
                "per_class": shares["per_class"],
                "unscored_classes": shares["unscored_classes"],
            }
        report.update(
            samples=int(all_labels.size),
            num_steps=int(config.sample.num_steps),
            cfg_scale=float(config.sample.cfg_scale),
            model_hash=weights.model_hash(config.model_dir),
            sampling_seconds_this_run=time.time() - tic,
        )
        io.atomic_write_json(workdir / "fidelity.json", report)
        rows = [grid[str(k)] for k in range(num_classes) if str(k) in grid]
        io.save_grid(workdir / "samples_per_class.png", np.concatenate(rows), columns=per_grid)
        metrics.print_table(
            evaluation.per_class_rows(report), title="class fidelity (oracle agrees)"
        )
        print(f"overall class fidelity {report['overall']:.4f} on {report['samples']} samples")
        if mode_oracle:
            print(f"mode shares (mode oracle): {report['modes']['overall']}")
        return report
