"""Fine-tuning a trained predictor on real + synthetic images, resumable per (arm, seed).

Every arm gets the same schedule (steps, batch size, learning rate); an arm differs only in
which images fill the synthetic share of each batch (`real` has none, so its batches are all
real), and for the long-tail baselines in how the real rows are drawn (`sampling =
"class_balanced"`: every class equally often) or in the loss (`logit_adjustment_tau` > 0: the
logit-adjusted loss of Menon et al. 2021). `synthetic_sampling = "class_balanced"` draws the
synthetic rows with every class equally often, whatever each class kept; `"predictor_loss"`
draws each in proportion to the predictor's loss on its class (a soft version of the review's
cut at review.max_predictor_prob: nothing is dropped). Batch k is drawn
from fold(seed, k) alone, so an interrupted run restored from its orbax checkpoint continues
with the very batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ltg_jax import checkpointing, evaluation, io, parallel, predictor, predictor_training
from ltg_jax.data import datasets, pipeline

PyTree = Any
EVAL_FILE = "eval.json"


def batch_split(batch_size: int, synthetic_fraction: float, num_synthetic: int) -> tuple[int, int]:
    """(real rows, synthetic rows) of each batch; all real when there is no synthetic data."""
    if num_synthetic == 0:
        return batch_size, 0
    n_syn = int(round(batch_size * synthetic_fraction))
    return batch_size - n_syn, n_syn


def augment_batch(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[B,H,W,C] -> same shape: the predictor's training augmentation (flip, shift <= 2 px)."""
    return np.stack([pipeline.augment({"image": x}, rng)["image"] for x in images])


def mixed_batch(
    real: Mapping[str, np.ndarray],
    synthetic: Mapping[str, np.ndarray],
    step: int,
    *,
    seed: int,
    batch_size: int,
    synthetic_fraction: float,
    augment: bool = True,
    class_balanced: bool = False,
    synthetic_weights: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Batch `step`: {'image' [B,H,W,C], 'label' [B]}, a fixed share drawn from the synthetic set.

    Rows are sampled with replacement from fold(seed, step), so any step's batch can be rebuilt
    after a restart without iterator state. `class_balanced` draws the real rows with weights
    1 / (its class's count): each class present is drawn equally often. `synthetic_weights`
    (synthetic_row_weights) are the synthetic rows' draw probabilities; None draws uniformly.
    """
    rng = np.random.default_rng([seed, step])
    n_real, n_syn = batch_split(batch_size, synthetic_fraction, len(synthetic["label"]))
    if class_balanced:
        ri = rng.choice(len(real["label"]), n_real, p=class_balanced_weights(real["label"]))
    else:
        ri = rng.integers(0, len(real["label"]), n_real)
    images, labels = [real["image"][ri]], [real["label"][ri]]
    if n_syn:
        if synthetic_weights is not None:
            si = rng.choice(len(synthetic["label"]), n_syn, p=synthetic_weights)
        else:
            si = rng.integers(0, len(synthetic["label"]), n_syn)
        images.append(synthetic["image"][si])
        labels.append(synthetic["label"][si])
    images_ = np.concatenate(images).astype(np.float32)
    if augment:
        images_ = augment_batch(images_, rng)
    return {"image": images_, "label": np.concatenate(labels).astype(np.int32)}


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-row sampling probabilities that give every present class the same total mass."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    weights = 1.0 / (counts[inverse] * len(counts))
    return weights / weights.sum()


def predictor_loss_weights(
    bundle: predictor.PredictorBundle, synthetic: Mapping[str, np.ndarray], batch_size: int
) -> np.ndarray:
    """Draw probabilities of the synthetic rows in proportion to the bundle's cross-entropy on
    each row's class: what the predictor gets wrong is drawn most, and nothing is cut."""
    logits = predictor_training.predict(
        bundle.adapted_apply, bundle.params["predictor"], synthetic["image"], batch_size
    )["logits"]
    log_probs = np.asarray(jax.nn.log_softmax(logits, -1), np.float64)
    loss = -np.take_along_axis(log_probs, synthetic["label"][:, None], axis=-1)[:, 0]
    loss = np.maximum(loss, 1e-12)  # a sample it is sure of keeps a tiny chance
    return loss / loss.sum()


def synthetic_row_weights(
    bundle: predictor.PredictorBundle, synthetic: Mapping[str, np.ndarray], sampling: str,
    batch_size: int,
) -> np.ndarray | None:  # fmt: skip
    """The synthetic rows' draw probabilities under `sampling`; None: uniform."""
    if sampling == "uniform" or not len(synthetic["label"]):
        return None
    if sampling == "class_balanced":
        return class_balanced_weights(synthetic["label"])
    return predictor_loss_weights(bundle, synthetic, batch_size)


SAMPLING = ("uniform", "class_balanced")  # of the real rows
SYNTHETIC_SAMPLING = (*SAMPLING, "predictor_loss")


def training_prior(
    real_labels: np.ndarray, synthetic_labels: np.ndarray, num_classes: int, train_config,
    synthetic_weights: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """[K] class frequencies of the batches fine-tuning draws (real share + synthetic share);
    `synthetic_weights` as mixed_batch takes them (needed for "predictor_loss")."""
    n_real, n_syn = batch_split(
        int(train_config["batch_size"]),
        float(train_config["synthetic_fraction"]),
        len(synthetic_labels),
    )
    prior = np.zeros(num_classes)
    for labels, rows, key, weights in ((real_labels, n_real, "sampling", None),
                                       (synthetic_labels, n_syn, "synthetic_sampling",
                                        synthetic_weights)):  # fmt: skip
        if rows and len(labels):
            sampling = train_config.get(key, "uniform")
            if weights is None and sampling == "predictor_loss":
                raise ValueError("the predictor_loss prior needs the rows' synthetic_weights")
            if weights is None and sampling == "class_balanced":
                weights = class_balanced_weights(labels)  # every present class equally often
            counts = np.bincount(labels, weights=weights, minlength=num_classes)
            prior += rows * counts / counts.sum()
    return prior / prior.sum()


def logit_offsets(
    real: Mapping[str, np.ndarray], synthetic: Mapping[str, np.ndarray], num_classes: int,
    train_config: Mapping[str, Any], synthetic_weights: np.ndarray | None = None,
) -> np.ndarray | None:  # fmt: skip
    """tau * log(prior) of the logit-adjusted loss, or None when tau is 0 (plain loss)."""
    tau = float(train_config.get("logit_adjustment_tau", 0.0))
    if tau == 0.0:
        return None
    prior = training_prior(
        real["label"], synthetic["label"], num_classes, train_config, synthetic_weights
    )
    return tau * np.log(np.maximum(prior, 1e-8))  # a class never drawn: a large fixed margin


def finetune(
    bundle: predictor.PredictorBundle,
    real: Mapping[str, np.ndarray],
    synthetic: Mapping[str, np.ndarray],
    train_config: Mapping[str, Any],
    seed: int,
    workdir: str | os.PathLike,
    *,
    stop_after_steps: int | None = None,
    desc: str = "fine-tune",
) -> tuple[PyTree, dict[str, Any]]:
    """Fine-tunes the bundle's predictor params in `workdir` (resuming it): (params, info).

    `train_config` holds num_steps, batch_size, learning_rate, warmup_steps, weight_decay,
    synthetic_fraction, augment and checkpoint_every, and optionally sampling and
    synthetic_sampling ("uniform" | "class_balanced": how the real / synthetic rows of a batch
    are drawn; the synthetic rows also "predictor_loss") and logit_adjustment_tau;
    `stop_after_steps` ends early, as a kill would (for resumption tests); `desc` labels the
    progress bar.
    """
    sampling = {key: str(train_config.get(key, "uniform"))
                for key in ("sampling", "synthetic_sampling")}  # fmt: skip
    for key, allowed in (("sampling", SAMPLING), ("synthetic_sampling", SYNTHETIC_SAMPLING)):
        if sampling[key] not in allowed:
            raise ValueError(f"--config.finetune.{key}={sampling[key]!r}; use one of {allowed}")
    synthetic_weights = synthetic_row_weights(
        bundle, synthetic, sampling["synthetic_sampling"], int(train_config["batch_size"])
    )
    tx = predictor_training.make_optimizer(train_config)
    mesh = parallel.data_mesh()
    # A copy on the mesh: the train step donates its state, the bundle's params serve every run.
    params0 = jax.tree.map(lambda x: np.array(x, copy=True), bundle.params["predictor"])
    state0 = parallel.replicate(predictor_training.create_train_state(params0, tx), mesh)
    manager = checkpointing.create_manager(
        workdir, save_every=int(train_config["checkpoint_every"]), max_to_keep=1
    )
    state, start = checkpointing.restore_or_init(manager, state0)
    num_steps = int(train_config["num_steps"])
    last = num_steps if stop_after_steps is None else min(num_steps, stop_after_steps)
    offsets = logit_offsets(
        real, synthetic, len(bundle.class_names), train_config, synthetic_weights
    )
    step_fn = predictor_training.make_train_step(bundle.adapted_apply, tx, offsets)
    started, losses = time.perf_counter(), []
    bar = parallel.progress(total=num_steps, initial=start, desc=desc, unit="step")
    for step in range(start + 1, last + 1):
        batch = mixed_batch(
            real,
            synthetic,
            step,
            seed=seed,
            batch_size=int(train_config["batch_size"]),
            synthetic_fraction=float(train_config["synthetic_fraction"]),
            augment=bool(train_config["augment"]),
            class_balanced=sampling["sampling"] == "class_balanced",
            synthetic_weights=synthetic_weights,
        )  # the global batch, the same on every process: each feeds its own rows
        local = parallel.process_batch_slice(len(batch["label"]))
        batch = parallel.host_local_to_global({k: v[local] for k, v in batch.items()}, mesh)
        with parallel.ticking(bar, "compiling") if step == start + 1 else contextlib.nullcontext():
            state, metrics = step_fn(state, batch)
        predictor_training.require_finite_step(step, metrics, f"fine-tuning in {workdir}")
        losses.append(metrics["loss"])
        checkpointing.save(manager, step, state, force=step == num_steps)
        bar.update(1)
    bar.close()
    if last > start and manager.latest_step() != last:
        checkpointing.save(manager, last, state, force=True)
    manager.close()
    info = {
        "resumed_from_step": start,
        "steps_this_run": last - start,
        "seconds_this_run": time.perf_counter() - started,
        "final_loss": float(losses[-1]) if losses else None,
        "finished": last == num_steps,
    }
    return checkpointing.host_state(state["params"]), info


def evaluate(
    bundle: predictor.PredictorBundle,
    params: PyTree,
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    data: datasets.DatasetInfo,
) -> dict[str, Any]:
    """accuracy_report (overall, many/medium/few, per class) of `params` on a split's arrays."""
    logits = predictor_training.predict(bundle.adapted_apply, params, arrays["image"], batch_size)[
        "logits"
    ]
    predicted = np.argmax(logits, -1)
    return evaluation.accuracy_report(arrays["label"], predicted, data.class_names, data.groups())


def finetune_and_evaluate(
    bundle: predictor.PredictorBundle,
    real: Mapping[str, np.ndarray],
    synthetic: Mapping[str, np.ndarray],
    eval_arrays: Mapping[str, Mapping[str, np.ndarray]],
    train_config: Mapping[str, Any],
    seed: int,
    workdir: str | os.PathLike,
    data: datasets.DatasetInfo,
    eval_batch_size: int = 500,
    desc: str = "fine-tune",
) -> dict[str, Any]:
    """One (arm, seed): fine-tune, evaluate each split, write eval.json; a finished one is read.

    `eval_arrays` maps split name -> {'image', 'label'}. Returns {split: report, 'train': info}.
    A finished run asked for splits it was not evaluated on (e.g. shifted test sets added
    later), or evaluated before reports said where errors go, restores its last checkpoint
    and evaluates only those.
    """
    workdir = Path(workdir)
    result: dict[str, Any] = {}
    if (workdir / EVAL_FILE).is_file():
        saved = io.read_json(workdir / EVAL_FILE)
        result = {k: v for k, v in saved.items() if k not in eval_arrays or "confused_with" in v}
        if all(split in result for split in eval_arrays):
            return result  # finished before: nothing to redo
    params, info = finetune(bundle, real, synthetic, train_config, seed, workdir, desc=desc)
    result.setdefault("train", {**info, "num_synthetic": len(synthetic["label"])})
    for split, arrays in eval_arrays.items():
        if split not in result:
            result[split] = evaluate(bundle, params, arrays, eval_batch_size, data)
    if parallel.is_process_zero():
        io.atomic_write_json(workdir / EVAL_FILE, result)
    parallel.sync("finetune_evaluated")  # every process sees eval.json from here on
    return result
