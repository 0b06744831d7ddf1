"""Training of the predictor and of its epistemic heads; `train/*.py` are thin wrappers around it.

Resumption is exact: batches are indexed by step (`dataset[step]`), the state (params, optimiser
state, step) is checkpointed with orbax, so an interrupted run continued to step 2N has the same
parameters, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from ltg_jax import (
    checkpointing,
    checks,
    evaluation,
    io,
    metrics,
    parallel,
    predictor,
    run_record,
    signals,
    workdirs,
)
from ltg_jax.data import datasets, fashion_mnist_lt, pipeline

Array = jax.Array
PyTree = Any
EVAL_TEST_FILE = "eval_test.json"
EVAL_VALIDATION_FILE = "eval_validation.json"
BUNDLE_FILE = "predictor_bundle.msgpack"
HEADS_FILE = "heads.msgpack"  # heads alone, for a predictor given by import path
IMAGE_SHAPE = (pipeline.IMAGE_SIZE, pipeline.IMAGE_SIZE, 1)

# ================================================================ model & optimiser


def create_model(model_config: Mapping[str, Any]) -> predictor.ConvClassifier:
    """The classifier described by `config.model`."""
    return predictor.ConvClassifier(
        num_classes=int(model_config["num_classes"]),
        widths=tuple(int(w) for w in model_config["widths"]),
        feature_dim=int(model_config["feature_dim"]),
        norm_groups=int(model_config["norm_groups"]),
        pooling=str(model_config["pooling"]),
    )


def create_heads(heads_config: Mapping[str, Any], num_classes: int) -> predictor.EpistemicHeads:
    """The epistemic heads described by `config.heads`."""
    return predictor.EpistemicHeads(
        num_classes=num_classes,
        num_heads=int(heads_config["num_heads"]),
        hidden=int(heads_config["hidden"]),
    )


def learning_rate_schedule(train_config: Mapping[str, Any]) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay to 0 at `num_steps`."""
    warmup = int(train_config["warmup_steps"])
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(train_config["learning_rate"]),
        warmup_steps=warmup,
        decay_steps=max(int(train_config["num_steps"]), warmup + 1),
    )


def make_optimizer(train_config: Mapping[str, Any]) -> optax.GradientTransformation:
    """AdamW on `learning_rate_schedule`."""
    return optax.adamw(
        learning_rate_schedule(train_config), weight_decay=float(train_config["weight_decay"])
    )


def init_params(module, rng: Array, example: Array) -> PyTree:
    """The 'params' collection of a linen module initialised on `example`."""
    return module.init(rng, example)["params"]


def create_train_state(params: PyTree, tx: optax.GradientTransformation) -> dict[str, PyTree]:
    """{'params', 'opt_state', 'step'}: everything a resumption needs (data is indexed by step)."""
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}


def make_train_step(
    apply_fn: predictor.Predictor,
    tx: optax.GradientTransformation,
    logit_offsets: np.ndarray | None = None,
) -> Callable[[dict, dict], tuple[dict, dict]]:
    """A jitted (state, batch{'image','label'}) -> (state, {'loss','accuracy'}) update.

    `logit_offsets` [K] (tau * log prior) gives the logit-adjusted loss of Menon et al. 2021:
    cross-entropy of logits + offsets, so rare classes need larger margins; the model's own
    logits (and `accuracy`) stay unadjusted.
    """
    offsets = None if logit_offsets is None else jnp.asarray(logit_offsets, jnp.float32)

    def loss_fn(params, images, labels):
        _, logits = apply_fn(params, images)
        adjusted = logits if offsets is None else logits + offsets
        loss = jnp.mean(signals.cross_entropy(adjusted, labels))
        return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

    def step(state, batch):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, accuracy), grads = grad_fn(state["params"], batch["image"], batch["label"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
        return new_state, {
            "loss": loss,
            "accuracy": accuracy,
            "grad_norm": optax.tree.norm(grads),
        }

    return jax.jit(step, donate_argnums=0)


def require_finite_step(step: int, step_metrics: Mapping[str, Any], where: str) -> None:
    """Stops a predictor run (training or fine-tuning) at a non-finite loss or gradient."""
    checks.require_finite_step(
        step, {k: step_metrics[k] for k in ("loss", "grad_norm")}, where,
        "Lower the learning rate (--config.train.learning_rate, or finetune.learning_rate in "
        "the mining loop) and check the data and the initial weights for NaN",
    )  # fmt: skip


def make_predict(apply_fn: predictor.Predictor) -> Callable[[PyTree, Array], tuple[Array, Array]]:
    """Jitted (params, images) -> (features, logits)."""
    return jax.jit(apply_fn)


def predict(
    apply_fn: predictor.Predictor, params: PyTree, images: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    """{'features': [N, D], 'logits': [N, K]} for a whole array of images."""
    forward = make_predict(apply_fn)

    def fn(batch):
        features, logits = forward(params, batch)
        return {"features": features, "logits": logits}

    return evaluation.batched_apply(fn, images, batch_size)


# ================================================================ data


def data_source(data_config: Mapping[str, Any], split: str):
    """The grain source of a split of fashion_mnist_lt (any of its configs)."""
    return fashion_mnist_lt.data_source(
        split,
        config=data_config["config"],
        data_dir=data_config["data_dir"] or None,
        source_dir=data_config["source_dir"] or None,
    )


# ================================================================ predictor


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Trains the predictor in `workdir` (resuming it), then evaluates on validation and test.

    `stop_after_steps` ends this run early, as an interruption would (for resumption tests).
    Returns {'validation': report, 'test': report, ...} (None if stopped early).
    """
    workdir = Path(workdir)
    # ---- input (first: a missing data folder fails before any compile)
    train_source = data_source(config.data, "train")
    dataset = pipeline.make_dataset(
        train_source,
        batch_size=config.train.batch_size,
        seed=config.seed,
        shuffle=True,
        augment_images=config.train.augment,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    # ---- model, optimiser (a bad model config fails here, before the workdir is claimed)
    checks.check_config_finite(config)
    model = create_model(config.model)
    tx = make_optimizer(config.train)
    params = checks.built(
        lambda: init_params(model, jax.random.key(config.seed), jnp.zeros((1, *IMAGE_SHAPE)))
    )
    with workdirs.claim(workdir):
        return _train_predictor(config, workdir, dataset, model, tx, params, stop_after_steps)


def _train_predictor(config, workdir, dataset, model, tx, params, stop_after_steps) -> dict | None:
    """train_and_evaluate's work once the workdir is claimed: train, evaluate, export."""
    is_main = jax.process_index() == 0
    apply_fn = predictor.module_apply(model)
    checkpointing.save_config(workdir, config, shape_keys=("model",))
    mesh = parallel.data_mesh()
    manager = checkpointing.create_manager(workdir, save_every=config.checkpoint_every)
    state0 = parallel.replicate(create_train_state(params, tx), mesh)
    state, start_step = checkpointing.restore_or_init(manager, state0)
    num_steps = int(config.train.num_steps)
    last_step = num_steps if stop_after_steps is None else min(num_steps, stop_after_steps)

    # ---- update loop
    train_step = make_train_step(apply_fn, tx)
    schedule = learning_rate_schedule(config.train)
    writer = metrics.MetricsWriter(workdir, resume_step=start_step)
    started = time.perf_counter()
    window: list[dict] = []
    progress = tqdm(total=num_steps, initial=start_step, disable=not is_main, desc="predictor")
    for step, batch in zip(
        range(start_step + 1, last_step + 1), pipeline.iterate(dataset, start_step), strict=False
    ):
        # Each process holds its own shard of the global batch (make_dataset).
        batch = parallel.host_local_to_global({k: batch[k] for k in ("image", "label")}, mesh)
        state, step_metrics = train_step(state, batch)
        require_finite_step(step, step_metrics, f"training the predictor in {workdir}")
        window.append(step_metrics)
        if step % config.checkpoint_every == 0 or step == num_steps:
            checkpointing.save(manager, step, state, force=True)
        if step % config.log_every == 0 or step == last_step:
            means = {k: float(np.mean([float(m[k]) for m in window])) for k in window[0]}
            window = []
            lr = float(schedule(step))
            writer.write(step, **{f"train/{k}": v for k, v in means.items()}, lr=lr)
            progress.set_postfix(loss=f"{means['loss']:.3f}", acc=f"{means['accuracy']:.3f}")
        progress.update(1)
    progress.close()
    train_seconds = time.perf_counter() - started
    if last_step > start_step and manager.latest_step() != last_step:
        checkpointing.save(manager, last_step, state, force=True)
    manager.close()
    if last_step < num_steps:
        return None

    # ---- evaluation (every process evaluates the whole split on its own device)
    params = checkpointing.host_state(state["params"])
    results: dict[str, Any] = {
        "steps": num_steps,
        "train_seconds_this_run": train_seconds,
        "resumed_from_step": start_step,
    }
    info = datasets.describe(config.data)
    # 'full' has no validation split; 'world' has the generative model's as well.
    eval_splits = [s for s in ("validation", "test") if s in info.splits]
    for split in eval_splits:
        arrays = datasets.load_split(config.data, split, config.eval.max_examples)
        logits = predict(apply_fn, params, arrays["image"], config.eval.batch_size)["logits"]
        predicted = np.argmax(logits, -1)
        report = evaluation.accuracy_report(
            arrays["label"], predicted, info.class_names, info.groups()
        )
        results[split] = report
        writer.write(num_steps, **{f"{split}/{k}": report[k] for k in ("overall", "many", "few")})
        if is_main:
            filename = EVAL_TEST_FILE if split == "test" else EVAL_VALIDATION_FILE
            run = {"steps": num_steps, "train_seconds_this_run": train_seconds}
            io.atomic_write_json(workdir / filename, {**report, **run})
    metrics.print_table(
        evaluation.accuracy_rows({s: results[s] for s in eval_splits}),
        title=f"accuracy after {num_steps} steps ({workdir})",
    )
    metrics.print_table(evaluation.per_class_rows(results["test"]), title="test accuracy per class")
    if is_main:  # shippable without orbax: predictor-only bundle (heads are added by their run)
        predictor.save_predictor_bundle(
            workdir / BUNDLE_FILE,
            model,
            {"predictor": params},
            metadata=_bundle_metadata(config, workdir, results),
        )
    return results


def _bundle_metadata(
    config: ml_collections.ConfigDict, workdir: Path, results: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Provenance stored in a bundle: data config, classes, steps and accuracy summary."""
    metadata = {
        "predictor_workdir": str(workdir),
        "data": run_record.plain(config.data),
        "steps": int(config.train.num_steps),
        "classes": list(datasets.describe(config.data).class_names),
        "input": {"shape": list(IMAGE_SHAPE), "range": [-1.0, 1.0], "layout": "NHWC"},
    }
    for split in ("validation", "test"):
        if results and split in results:
            metadata[f"{split}_accuracy"] = {
                k: results[split][k] for k in ("overall", "many", "medium", "few")
            }
    return metadata


def load_trained_predictor(
    workdir: str | os.PathLike,
) -> tuple[predictor.ConvClassifier, PyTree, ml_collections.ConfigDict]:
    """(model, params, config) of a finished `train_and_evaluate` workdir."""
    config = checkpointing.load_config(workdir)
    model = create_model(config.model)
    state, step = checkpointing.restore_latest(workdir)
    expected = init_params(model, jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))
    checkpointing.check_shapes(state["params"], expected, workdir, step)
    return model, jax.tree.map(jnp.asarray, state["params"]), config


# ================================================================ epistemic heads


def bootstrap_counts(rng: Array, num_heads: int, num_examples: int) -> Array:
    """[M, N] int32: how often each example is drawn in each head's bootstrap resample."""
    draws = jax.random.randint(rng, (num_heads, num_examples), 0, num_examples)
    return jax.vmap(lambda d: jnp.bincount(d, length=num_examples))(draws).astype(jnp.int32)


def make_heads_step(
    heads_apply: Callable[[PyTree, Array], Array], tx: optax.GradientTransformation
) -> Callable:
    """Jitted (params, opt_state, features[B,D], labels[B], weights[M,B]) -> (params, opt, loss)."""

    def loss_fn(params, features, labels, weights):
        member_logits = heads_apply(params, features)  # [B, M, K]
        log_probs = jax.nn.log_softmax(member_logits, axis=-1)
        nll = -jnp.take_along_axis(log_probs, labels[:, None, None], axis=-1)[..., 0]  # [B, M]
        # Bootstrap counts as weights = training on each head's resample; heads' losses are
        # summed, and their params are disjoint, so each head gets only its own gradient.
        return jnp.sum(jnp.sum(weights.T * nll, axis=0) / jnp.maximum(weights.sum(1), 1))

    def step(params, opt_state, features, labels, weights):
        loss, grads = jax.value_and_grad(loss_fn)(params, features, labels, weights)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step)


def fit_heads(
    heads: predictor.EpistemicHeads,
    heads_config: Mapping[str, Any],
    features: Array,
    labels: Array,
    rng: Array,
) -> tuple[PyTree, list[float]]:
    """Trains all heads at once, each from its own init on its own bootstrap of (features, y)."""
    init_rng, boot_rng, batch_rng = jax.random.split(rng, 3)
    params = init_params(heads, init_rng, features[:1])
    counts = bootstrap_counts(boot_rng, heads.num_heads, features.shape[0])
    tx = optax.adamw(
        float(heads_config["learning_rate"]), weight_decay=heads_config["weight_decay"]
    )
    opt_state = tx.init(params)
    step = make_heads_step(predictor.module_apply(heads), tx)
    batch_size = int(heads_config["batch_size"]) or features.shape[0]
    losses = []
    for i in range(int(heads_config["num_steps"])):
        if batch_size >= features.shape[0]:
            idx = jnp.arange(features.shape[0])
        else:
            idx = jax.random.choice(
                jax.random.fold_in(batch_rng, i), features.shape[0], (batch_size,)
            )
        params, opt_state, loss = step(
            params, opt_state, features[idx], labels[idx], counts[:, idx]
        )
        checks.require_finite_step(
            i + 1, {"loss": loss}, "training the epistemic heads",
            "Lower --config.heads.learning_rate and check the predictor's features for NaN",
        )  # fmt: skip
        losses.append(float(loss))
    return params, losses


def frozen_predictor(
    config: ml_collections.ConfigDict,
) -> tuple[predictor.PredictorBundle, Mapping[str, Any]]:
    """(bundle, data config) of the predictor the heads are trained for.

    `config.predictor` (a bundle or `package.module:factory`) with `config.data`, or else the
    finished `train.predictor` workdir `config.predictor_workdir` with its own data config.
    """
    if config.get("predictor"):
        bundle = predictor.load_predictor(config.predictor)
        return bundle, config.data
    model, params, predictor_config = load_trained_predictor(config.predictor_workdir)
    metadata = _predictor_metadata(config.predictor_workdir)
    bundle = predictor.PredictorBundle(model, None, {"predictor": params}, metadata)
    return bundle, predictor_config.data


def train_epistemic_heads(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Freezes a predictor, trains M heads on its train features (one bootstrap each).

    Writes the heads' orbax checkpoint, config.json, metrics and `predictor_bundle.msgpack`
    (predictor + heads) for our ConvClassifier, or `heads.msgpack` for a predictor given by
    import path (load both with `predictor.load_predictor(spec, heads=...)`).
    """
    workdir = Path(workdir)
    checks.check_config_finite(config)
    bundle, data_config = frozen_predictor(config)
    predictor_params = bundle.params["predictor"]
    heads = create_heads(config.heads, bundle.num_classes)
    # Features once: the predictor is frozen, so they never change during head training.
    train = datasets.load_split(data_config, "train", config.max_train_examples)
    outputs = predict(bundle.adapted_apply, predictor_params, train["image"], config.batch_size)
    features, labels = jnp.asarray(outputs["features"]), jnp.asarray(train["label"])
    template = {
        "params": init_params(heads, jax.random.key(0), features[:1]),
        "step": jnp.zeros((), jnp.int32),
    }
    mesh = parallel.data_mesh()  # every process fits the same heads; orbax saves them as one
    template = parallel.replicate(template, mesh)
    with workdirs.claim(workdir):
        shape_keys = ("heads", "predictor_workdir", "predictor")
        checkpointing.save_config(workdir, config, shape_keys=shape_keys)
        manager = checkpointing.create_manager(workdir)
        state, done = checkpointing.restore_or_init(manager, template)
        if done == 0:
            started = time.perf_counter()
            heads_params, losses = fit_heads(
                heads, config.heads, features, labels, jax.random.key(config.seed)
            )
            num_steps = int(config.heads.num_steps)
            state = {"params": heads_params, "step": np.asarray(num_steps, np.int32)}
            state = parallel.replicate(state, mesh)
            checkpointing.save(manager, num_steps, state, force=True)
            writer = metrics.MetricsWriter(workdir, resume_step=0)
            for i in range(0, len(losses), max(1, config.log_every)):
                writer.write(i + 1, **{"heads/loss": losses[i]})
            writer.write(
                len(losses), **{"heads/loss": losses[-1]}, seconds=time.perf_counter() - started
            )
        manager.close()
        state = checkpointing.host_state(state)
        params = {"predictor": predictor_params, "heads": state["params"]}
        member_logits = predictor.module_apply(heads)(state["params"], features)
        head_accuracy = np.asarray(
            jnp.mean(jnp.argmax(member_logits, -1) == labels[:, None], axis=0)
        )
        summary = {
            "train_accuracy_per_head": head_accuracy.tolist(),
            "train_mean_epistemic": float(jnp.mean(signals.mutual_information(member_logits))),
        }
        if jax.process_index() == 0:
            metadata = {
                **bundle.metadata,
                "heads_workdir": str(workdir),
                "heads_train_mean_epistemic": summary["train_mean_epistemic"],
            }
            if isinstance(bundle.predictor, predictor.ConvClassifier):
                predictor.save_predictor_bundle(
                    workdir / BUNDLE_FILE, bundle.predictor, params, heads, metadata=metadata
                )
            else:
                predictor.save_heads(workdir / HEADS_FILE, heads, state["params"], metadata)
            io.atomic_write_json(workdir / "heads_summary.json", summary)
        return {"params": params, "model": bundle.predictor, "heads": heads, **summary}


def _predictor_metadata(predictor_workdir: str | os.PathLike) -> dict[str, Any]:
    """The metadata of the predictor's own bundle (provenance, accuracy), if it wrote one."""
    path = Path(predictor_workdir) / BUNDLE_FILE
    return predictor.load_predictor_bundle(path).metadata if path.is_file() else {}
