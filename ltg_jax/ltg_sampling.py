"""LTG sampling runs: validate, plan global indices, sample batch by batch, write a dataset.

`run_ltg(config, workdir)` is what `python -m sample.ltg` calls (configs/ltg.py). Sample i of a
run is fixed by the class order and per-class counts, and draws its noise from
fold_in(seed, i), so a run killed at any moment and restarted with the same command ends with
every sample written exactly once and identical to an uninterrupted run. Every process writes
only its own rows of each batch; process 0 writes the shared files. Layout of `workdir`:

    config.json        the run's config + model/predictor hashes (checked on resume)
    data/              the dataset (ltg_jax.data.synthetic): class folders + metadata.jsonl
    contact_sheets/    one annotated PNG per class, hardest (highest signal) first
    summary.json       counts, mean signals per class, wall time, hashes

`run_grid(config, workdir)` (python -m sample.grid) draws unguided grids of class ids or prompts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ltg_jax import (
    adapters,
    checks,
    diffusion,
    io,
    models,
    parallel,
    predictor,
    run_record,
    sampling,
    sheets,
    signals,
    weights,
    workdirs,
)
from ltg_jax.data import synthetic

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
DATA_DIR = "data"
SHEETS_DIR = "contact_sheets"
# Config keys free to change on resume: samples depend on fold_in(seed, global index) only
# (bit-identity with an uninterrupted run also needs the same batch size and hardware).
RESUME_FREE_KEYS = frozenset({"batch_size", "sheet_columns"})
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# ================================================================ validation (before compute)


@dataclasses.dataclass(frozen=True)
class FolderInfo:
    """What a diffusers-format folder is, read from its JSON files only (no weights)."""

    path: Path
    kind: str  # "class" | "text"
    num_classes: int | None  # class models: K of class_embedder/config.json
    scheduler: dict[str, Any]


def inspect_folder(path: str | os.PathLike, field: str = "pipeline") -> FolderInfo:
    """Checks a model folder from its JSON files; errors name the config field to fix."""
    if not str(path).strip():
        raise ValueError(
            f"--config.{field} is empty; this variant needs a model folder: "
            f"--config.{field}=/path/to/stable-diffusion (a diffusers-format folder)"
        )
    path = Path(path)
    fix = (
        f"set --config.{field} to a diffusers-format folder (the embedded model, a folder "
        "written by `python -m train.ldm` (workdir/pipeline), or a Stable Diffusion folder "
        "saved with `save_pretrained`)"
    )
    if not path.is_dir():
        raise FileNotFoundError(f"no model folder at {path}; {fix}")
    if not (path / "model_index.json").is_file():
        raise ValueError(f"{path} has no model_index.json, so it is not a diffusers folder; {fix}")
    for part in ("unet", "vae"):
        if not (path / part / "config.json").is_file():
            raise ValueError(f"{path} has no {part}/config.json; {fix}")
    weights.check_supported(path)
    sched = path / "scheduler" / "scheduler_config.json"
    if not sched.is_file():
        raise ValueError(f"{path} has no scheduler/scheduler_config.json (needed to sample)")
    embedder = path / "class_embedder" / "config.json"
    if embedder.is_file():
        return FolderInfo(path, "class", int(io.read_json(embedder)["num_classes"]), _json(sched))
    if (path / "text_encoder").is_dir() and (path / "tokenizer").is_dir():
        problem = models.tokenizer_files_problem(path / "tokenizer")
        if problem:
            raise ValueError(f"{problem}; or {fix}")
        return FolderInfo(path, "text", None, _json(sched))
    raise ValueError(
        f"{path} has neither class_embedder/ (class-conditional) nor text_encoder/ + "
        f"tokenizer/ (text-conditional); {fix}"
    )


def _json(path: Path) -> dict[str, Any]:
    return dict(io.read_json(path))


def load_bundle(
    spec: str | os.PathLike, field: str = "predictor", heads: str = ""
) -> predictor.PredictorBundle:
    """The predictor (msgpack bundle or `pkg.mod:factory`, + heads), errors naming the field."""
    try:
        return predictor.load_predictor(spec, heads or None)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--config.{field}: {e}") from e
    except (predictor.BundleFormatError, checks.NonFiniteError) as e:
        raise ValueError(f"--config.{field}: {e}") from e
    except Exception as e:  # not a bundle: truncated or foreign msgpack, a failing factory
        raise ValueError(
            f"--config.{field}: cannot load the predictor {spec} ({type(e).__name__}: {e}); "
            "point it at a predictor_bundle.msgpack written by `python -m train.epistemic_head` "
            "or at `package.module:factory`"
        ) from e


@dataclasses.dataclass(frozen=True)
class Plan:
    """The classes of a run and how many samples each gets (fixes every global index)."""

    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]  # name of each planned class
    labels: tuple[str, ...]  # prompt (text models) or class name (class models)
    counts: tuple[int, ...]
    predictor_ids: tuple[int, ...] = ()  # the predictor's id of each class (-1: not its class)

    @property
    def num_samples(self) -> int:
        return sum(self.counts)

    def class_positions(self) -> np.ndarray:
        """[N] position in `class_ids` of global sample i (class order, then per-class count)."""
        return np.repeat(np.arange(len(self.counts)), self.counts).astype(np.int32)


def _tuple(value: Any) -> tuple:
    """Config values arrive as int, str, list or tuple; always hand back a tuple."""
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def config_names(value: Any) -> tuple[str, ...]:
    """Names from a tuple, or from 'a,b,c' (what `--config.class_names=a,b,c` gives)."""
    return tuple(n.strip() for v in _tuple(value) for n in str(v).split(",") if n.strip())


def config_ints(value: Any, field: str) -> tuple[int, ...]:
    """Class ids of a config field; names by mistake get a pointer to --config.class_names."""
    return checks.config_ints(value, field, "; class names go in --config.class_names")


def make_plan(
    config: ml_collections.ConfigDict, info: FolderInfo, bundle: predictor.PredictorBundle
) -> Plan:
    """Classes, names, prompts and counts of a run; every mismatch is an error naming the fix."""
    k_pred = bundle.num_classes
    names = config_names(config.class_names) or bundle.class_names
    k = info.num_classes if info.kind == "class" else len(names)
    if info.kind == "class" and k != k_pred:
        raise ValueError(
            f"the model folder has {k} classes but the predictor {k_pred}; use a predictor "
            "trained on the same label set (--config.predictor) or the matching folder"
        )
    if len(names) != k:
        raise ValueError(
            f"{len(names)} class names for {k} classes; set --config.class_names to {k} names "
            "(or leave it empty to use the predictor bundle's names)"
        )
    ids = config_ints(config.classes, "classes") or tuple(range(k))
    bad = [i for i in ids if not 0 <= i < k]
    if bad:
        raise ValueError(f"class ids {bad} out of range [0, {k}); fix --config.classes")
    if len(set(ids)) != len(ids):
        raise ValueError(f"--config.classes repeats ids: {list(ids)}")
    counts = checks.config_ints(config.samples_per_class, "samples_per_class")
    if len(counts) == 1:
        counts = counts * len(ids)
    if len(counts) != len(ids) or any(c < 0 for c in counts) or not sum(counts):
        raise ValueError(
            f"--config.samples_per_class={list(counts)}: give one count >= 0 for all classes or "
            f"one per class ({len(ids)}), with at least one sample in all"
        )
    class_names = tuple(names[i] for i in ids)
    if info.kind == "class":
        predictor_ids = ids
    else:  # text: the predictor knows a class by its name, whatever order the run lists them
        predictor_ids = tuple(bundle.class_index(n) for n in class_names)
    if info.kind == "text":
        try:
            labels = tuple(str(config.prompt).format(**{"class": n}) for n in class_names)
        except (KeyError, IndexError) as e:
            raise ValueError(
                f"--config.prompt={config.prompt!r}: use {{class}} for the class name ({e})"
            ) from None
    else:
        labels = class_names
    return Plan(ids, class_names, labels, counts, predictor_ids)


def planned_files(plan: Plan) -> list[str]:
    """The dataset-relative file of every sample of a run, by global index."""
    return [
        synthetic.sample_file(plan.class_ids[c], plan.class_names[c], i)
        for i, c in enumerate(plan.class_positions())
    ]


def check_run_settings(
    config: ml_collections.ConfigDict, bundle: predictor.PredictorBundle
) -> dict[str, float]:
    """Signal, batch size and dtype checks; returns the signal weights."""
    weights_ = diffusion.parse_signal(config.signal)
    if "epistemic" in weights_ and bundle.heads is None:
        raise ValueError(
            f"--config.signal={config.signal!r} needs epistemic heads but the bundle "
            f"{config.predictor} has none; train them (`python -m train.epistemic_head`) or "
            "drop 'epistemic'"
        )
    n_dev, n_proc = jax.device_count(), jax.process_count()
    if config.batch_size < 1 or config.batch_size % n_dev:
        raise ValueError(
            f"--config.batch_size={config.batch_size} must be a positive multiple of the "
            f"{n_dev} devices (x {n_proc} processes)"
        )
    for field in ("dtype", "param_dtype"):
        value = config.get(field, "float32")
        if value not in DTYPES:
            raise ValueError(f"--config.{field}={value!r}; use one of {sorted(DTYPES)}")
    return weights_


def sampler_config(config: ml_collections.ConfigDict, info: FolderInfo) -> sampling.SamplerConfig:
    """The static sampler settings: config.sampler plus the folder's scheduler."""
    return sampling.SamplerConfig.from_config(
        {**config.sampler.to_dict(), "scheduler": info.scheduler}
    )


# ================================================================ planning


def pending_batches(
    num_samples: int, done: set[int] | frozenset[int], batch_size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(indices [B] int32, write mask [B] bool) of each batch that still has unwritten samples.

    Batch k is always indices [kB, (k+1)B), padded at the end by repeating the last index, so
    a resumed run computes every sample in the same batch as an uninterrupted one (identical
    numerics even where XLA results depend on the batch); written and padded rows are masked.
    """
    out = []
    for start in range(0, num_samples, batch_size):
        chunk = np.arange(start, min(start + batch_size, num_samples), dtype=np.int32)
        write = np.asarray([int(i) not in done for i in chunk])
        if write.any():
            pad = batch_size - chunk.size
            out.append(
                (
                    np.concatenate([chunk, np.full(pad, chunk[-1], np.int32)]),
                    np.pad(write, (0, pad)),
                )
            )
    return out


def file_hash(path: str | os.PathLike) -> str:
    """sha256 hex of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def folder_hash(path: str | os.PathLike) -> str:
    """sha256 over a model folder's config.json and weight files (e.g. a tiny decoder)."""
    files = sorted(Path(path).glob("*.safetensors")) + [Path(path) / "config.json"]
    return hashlib.sha256("".join(file_hash(f) for f in files).encode()).hexdigest()


def check_resume(saved: Mapping[str, Any], current: Mapping[str, Any], workdir: Path) -> None:
    """Raises unless a saved run record matches the current one (up to RESUME_FREE_KEYS)."""
    free = {f"config.{k}" for k in RESUME_FREE_KEYS}
    diff = run_record.differences(saved, current, keep=lambda k: k not in free)
    if diff:
        raise ValueError(
            f"{workdir} holds a different run ({diff[:5]}); restart with the same config "
            "to resume it, or use a new --workdir"
        )


# ================================================================ the run


@dataclasses.dataclass
class Setup:
    """Everything a run needs, built once: models, params, the jitted sampler and scorer."""

    plan: Plan
    info: FolderInfo
    bundle: predictor.PredictorBundle
    signal_weights: dict[str, float]
    hashes: dict[str, str]
    sampler: Any
    params: Any
    cond_table: Any  # per planned class: labels [P] or the text cond dict [P, ...]
    score: Any  # (predictor params, images, labels) -> {signal: [B]}


def validate(config: ml_collections.ConfigDict):
    """All cheap checks before any compute: (folder info, bundle, plan, signal weights)."""
    checks.check_config_finite(config)
    info = inspect_folder(config.pipeline)
    bundle = load_bundle(config.predictor, heads=config.get("predictor_heads", ""))
    weights_ = check_run_settings(config, bundle)
    plan = make_plan(config, info, bundle)
    unknown = [n for n, i in zip(plan.class_names, plan.predictor_ids, strict=True) if i < 0]
    if "loss" in weights_ and unknown:
        raise ValueError(
            f"signal 'loss' scores the conditioning class, but the predictor has no class "
            f"{unknown} (its classes: {list(bundle.class_names)}); use its class names in "
            "--config.class_names or drop 'loss' from --config.signal"
        )
    sampler_config(config, info)  # rejects bad solver/steps/guidance keys now
    if str(config.get("tiny_decoder", "")):
        weights.load_tiny_vae(config.tiny_decoder, place=lambda x: None)  # reads and checks
    adapter = predictor_adapter(config, bundle)
    check_bundle_runs(bundle, adapter, decoded_shape(config, info), config.predictor)
    return info, bundle, plan, weights_


def predictor_adapter(
    config: ml_collections.ConfigDict, bundle: predictor.PredictorBundle
) -> adapters.InputAdapter:
    """The bundle's input adapter, with the fields set in config.predictor_input on top."""
    given = config.get("predictor_input", {}).items()
    overrides = {k: v for k, v in given if v is not None and v != ()}
    base = dataclasses.asdict(bundle.input_adapter)
    try:
        return adapters.InputAdapter.from_config({**base, **overrides})
    except ValueError as e:
        raise ValueError(f"--config.predictor_input: {e}") from None


def decoded_shape(config: ml_collections.ConfigDict, info: FolderInfo) -> tuple[int, int, int]:
    """(H, W, C) of the decoded images of a run, from the folder's JSON files."""
    unet, vae = (io.read_json(info.path / p / "config.json") for p in ("unet", "vae"))
    try:
        height, width = diffusion.image_size(unet, vae, _tuple(config.resolution) or None)
    except ValueError as e:
        raise ValueError(f"--config.resolution: {e}") from None
    return (height, width, int(models.fill_defaults("vae", vae)["out_channels"]))


def check_bundle_runs(
    bundle: predictor.PredictorBundle,
    adapter: adapters.InputAdapter,
    image_shape: tuple[int, int, int],
    spec: str,
) -> None:
    """Traces adapter + scorer on one decoded-size image (shapes only): fails here, not mid-run."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((1,), jnp.int32)
    try:
        jax.eval_shape(diffusion.adapted_scorer(bundle, adapter), bundle.params, x, y)
    except Exception as e:
        raise ValueError(
            f"--config.predictor: {spec} does not run on the decoded {image_shape} images "
            f"through its input adapter ({type(e).__name__}: {str(e).splitlines()[0]}); set "
            "--config.predictor_input (size, channels, range, normalise) or retrain/re-export it"
        ) from e


def predictor_hash(
    spec: str | os.PathLike, bundle: predictor.PredictorBundle, heads: str = ""
) -> str:
    """sha256 of a bundle file's bytes, else of the predictor's (+ heads') params and metadata."""
    if Path(str(spec)).is_file() and not heads:
        return file_hash(spec)
    digest = hashlib.sha256(json.dumps(bundle.metadata, sort_keys=True, default=str).encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(bundle.params)[0]:
        arr = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def build(config: ml_collections.ConfigDict, mesh=None) -> Setup:
    """Validates, then loads the models and builds the jitted sampler (not yet compiled)."""
    info, bundle, plan, weights_ = validate(config)
    mesh = parallel.data_mesh() if mesh is None else mesh
    pipe = weights.load_pipeline(
        info.path, dtype=DTYPES[config.dtype], remat=config.remat,
        param_dtype=DTYPES[config.get("param_dtype", "float32")],
        place=lambda x: parallel.replicate(x, mesh),  # straight onto the mesh: one copy
    )  # fmt: skip
    adapter = predictor_adapter(config, bundle)
    base = diffusion.conditional_models(pipe, _tuple(config.resolution) or None)
    diffusion_params = diffusion.pipeline_params(pipe)
    tiny_hash = {}
    if str(config.get("tiny_decoder", "")):
        tiny, diffusion_params["tiny_vae"], tiny_config = weights.load_tiny_vae(
            config.tiny_decoder, dtype=DTYPES[config.dtype]
        )
        base = diffusion.with_tiny_decoder(base, tiny, float(tiny_config["scaling_factor"]))
        tiny_hash["tiny_decoder_hash"] = folder_hash(config.tiny_decoder)
    models_ = diffusion.with_signal(base, diffusion.predictor_signal(bundle, weights_, adapter))
    ids = np.asarray(plan.predictor_ids, np.int32)
    if info.kind == "class":
        cond_table = ids
    else:
        cond_table = diffusion.encode_prompts(
            pipe, plan.labels, ids, config.negative_prompt, _tuple(config.resolution) or None
        )
    params = parallel.replicate(diffusion.guided_params(diffusion_params, bundle.params), mesh)
    hashes = {
        "model_hash": weights.model_hash(info.path),
        "predictor_hash": predictor_hash(
            config.predictor, bundle, config.get("predictor_heads", "")
        ),
        **tiny_hash,
    }
    score = diffusion.adapted_scorer(bundle, adapter, predictions=True)
    return Setup(
        plan=plan,
        info=info,
        bundle=bundle,
        signal_weights=weights_,
        hashes=hashes,
        sampler=sampling.make_sampler(sampler_config(config, info), models_, mesh),
        params=params,
        cond_table=cond_table,
        score=score,
    )


def take_rows(tree: Any, rows: np.ndarray) -> Any:
    """Rows of every leaf of a pytree of batched arrays (as numpy)."""
    return jax.tree.map(lambda x: np.asarray(x)[rows], tree)


def _run_sampler(sampler, params, idx, cond, seed: int) -> sampling.SampleOutput:
    """Calls the jitted sampler with every argument already placed on the global mesh."""
    mesh = sampler.mesh
    key_data, w = parallel.replicate(
        (jax.random.key_data(jax.random.key(seed)), np.float32(1.0)), mesh
    )
    rng = jax.jit(jax.random.wrap_key_data, out_shardings=parallel.replicated(mesh))(key_data)
    return sampler.jitted(params, idx, cond, rng, w)


def sample_batch(
    setup: Setup, config: ml_collections.ConfigDict, indices: np.ndarray, positions: np.ndarray
) -> dict[str, np.ndarray]:
    """This process's rows of one global batch: images [b,H,W,C] in [-1,1], signals, verdicts.

    Signals and the predictor's verdict ('predicted_class', 'predicted_prob') are those of
    the images as written (8-bit), so the metadata can be recomputed from the PNG files;
    'guidance' is the weighted signal the run followed.
    """
    local = parallel.process_batch_slice(indices.size)
    cond = take_rows(setup.cond_table, positions[indices[local]])
    idx, cond = parallel.host_local_to_global((indices[local], cond), setup.sampler.mesh)
    out = _run_sampler(setup.sampler, setup.params, idx, cond, config.seed)
    if not parallel.all_finite(out.images):
        raise checks.NonFiniteError(
            f"the sampled images of samples {indices.tolist()} hold NaN or inf; "
            + finite_hint(config)
        )
    images = io.to_uint8(parallel.global_to_host_local(out.images)).astype(np.float32)
    images = images / 127.5 - 1.0
    labels = np.asarray(setup.plan.predictor_ids, np.int32)[positions[indices[local]]]
    # 'loss' only where every class is the predictor's (a text run may name other classes).
    known = min(setup.plan.predictor_ids) >= 0
    # Scored as one global batch on the mesh, like the sampling: the same numbers however
    # the devices are split over processes.
    x, y = parallel.host_local_to_global((images, labels), setup.sampler.mesh)
    scores = setup.score(setup.params["predictor"], x, y if known else None)
    if not parallel.all_finite(scores):
        raise checks.NonFiniteError(
            f"the predictor's signals of samples {indices.tolist()} hold NaN or inf; check the "
            f"predictor {config.predictor} and its input settings (--config.predictor_input)"
        )
    scores = parallel.global_to_host_local(scores)
    verdict = {k: np.asarray(scores.pop(k)) for k in ("predicted_class", "predicted_prob")}
    scores["guidance"] = signals.weighted_signal(scores, setup.signal_weights)
    return {
        "images": images,
        **verdict,
        **{f"signals/{k}": np.asarray(v) for k, v in scores.items()},
    }


def guidance_followed(config: ml_collections.ConfigDict) -> str:
    """The signal a run's samples were steered by ('none' when unguided): metadata's `guidance`."""
    return str(config.signal) if float(config.sampler.guidance.w) else "none"


def progress_label(config: ml_collections.ConfigDict) -> str:
    """The sampling bar's label: which arm this is (guided by which signal, or unguided)."""
    w = float(config.sampler.guidance.w)
    return f"ltg {config.signal} w={w:g}" if w else "unguided"


def finite_hint(config: ml_collections.ConfigDict) -> str:
    """The fix for a non-finite sampled batch: the usual culprits, given the run's settings."""
    guidance = config.sampler.get("guidance")
    lower = (
        f"--config.sampler.guidance.w (now {float(guidance.w)})"
        if guidance is not None
        else f"--config.sampler.cfg_scale (now {float(config.sampler.cfg_scale)})"
    )
    return (
        f"the run stopped before writing them. Lower {lower} or use --config.dtype=float32 "
        f"(now {config.dtype}); the model folder {config.pipeline} may hold bad weights"
    )


def run_ltg(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """The whole LTG run into `workdir` (resumable); returns the summary."""
    start_time = time.time()
    workdir = Path(workdir)
    setup = build(config)  # every input check happens here, before any sampling or write
    with workdirs.claim(workdir):  # one job per workdir; sweeps a killed run's partial files
        return _sample_into(setup, config, workdir, start_time)


def _sample_into(
    setup: Setup, config: ml_collections.ConfigDict, workdir: Path, start_time: float
) -> dict[str, Any]:
    """run_ltg's work once the workdir is claimed."""
    plan, data = setup.plan, workdir / DATA_DIR
    record = run_record.make(config, **setup.hashes)
    if (workdir / CONFIG_FILE).is_file():
        check_resume(io.read_json(workdir / CONFIG_FILE), record, workdir)
    elif parallel.is_process_zero():
        io.atomic_write_json(workdir / CONFIG_FILE, record)

    pid, nproc = jax.process_index(), jax.process_count()
    metadata = synthetic.metadata_path(data, pid, nproc)
    synthetic.repair_metadata(metadata)
    parallel.sync("ltg_repaired")  # nobody writes before this barrier
    done = {r["index"] for r in synthetic.read_rows(data)}
    parallel.sync("ltg_planned")  # nobody writes before every process has read the same done set

    positions = plan.class_positions()
    batches = pending_batches(plan.num_samples, done, int(config.batch_size))
    bar = parallel.progress(
        total=plan.num_samples, initial=len(done), desc=progress_label(config), unit="img"
    )
    w = float(config.sampler.guidance.w)
    followed = guidance_followed(config)
    for k, (indices, write) in enumerate(batches):
        with parallel.ticking(bar, "compiling") if k == 0 else contextlib.nullcontext():
            out = sample_batch(setup, config, indices, positions)
        local = parallel.process_batch_slice(indices.size)
        for j, i in enumerate(indices[local]):
            if not write[local][j]:
                continue  # written before the restart, or padding of the last batch
            c = int(positions[i])
            sig = {k.split("/", 1)[1]: float(v[j]) for k, v in out.items() if "/" in k}
            row = synthetic.sample_row(
                index=int(i),
                class_id=plan.class_ids[c],
                class_name=plan.class_names[c],
                label=plan.labels[c],
                seed=int(config.seed),
                guidance=followed,
                w=w,
                signals=sig,
                variant=str(config.variant),
                predicted_class=int(out["predicted_class"][j]),
                predicted_name=setup.bundle.class_names[int(out["predicted_class"][j])],
                predicted_prob=float(out["predicted_prob"][j]),
                **setup.hashes,
            )
            synthetic.write_sample(data, out["images"][j], row, metadata)
        bar.update(int(write.sum()))
    bar.close()

    parallel.sync("ltg_sampled")
    summary = {}
    if parallel.is_process_zero():
        rows = synthetic.finalize_metadata(data)
        write_contact_sheets(data, rows, workdir / SHEETS_DIR, int(config.sheet_columns))
        summary = summarize(rows, plan, setup.hashes, config)
        summary.update(
            wall_time_s=round(time.time() - start_time, 3),
            resumed_with=len(done),
            generated=plan.num_samples - len(done),
        )
        io.atomic_write_json(workdir / SUMMARY_FILE, summary)
    parallel.sync("ltg_done")
    return summary


# ================================================================ outputs


def write_contact_sheets(
    data: Path, rows: Sequence[Mapping[str, Any]], out: Path, columns: int = 8
) -> list[Path]:
    """One annotated PNG per class of its samples, hardest (highest guidance signal) first."""
    by_class: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_class.setdefault(r["file_name"].split("/")[0], []).append(r)
    paths = []
    for folder, class_rows in sorted(by_class.items()):
        first = class_rows[0]
        title = (
            f"{first['class_name']}: {len(class_rows)} samples, hardest first "
            f"(guidance: {first['guidance']}, w = {float(first['w']):g})"
        )
        paths.append(
            sheets.rows_sheet(data, class_rows, out / f"{folder}.png", columns=columns, title=title)
        )
    return paths


def summarize(
    rows: Sequence[Mapping[str, Any]],
    plan: Plan,
    hashes: Mapping[str, str],
    config: ml_collections.ConfigDict,
) -> dict[str, Any]:
    """Counts and mean signals per class (the run's summary.json, less timing)."""
    per_class = {}
    for cid, name in zip(plan.class_ids, plan.class_names, strict=True):
        class_rows = [r for r in rows if r["class_id"] == cid]
        names = sorted({k for r in class_rows for k in r["signals"]})
        per_class[synthetic.class_folder(cid, name)] = {
            "class_id": cid,
            "class_name": name,
            "count": len(class_rows),
            "mean_signals": {
                k: float(np.mean([r["signals"][k] for r in class_rows])) for k in names
            },
        }
    return {
        "num_samples": len(rows),
        "planned": plan.num_samples,
        "variant": str(config.variant),
        "signal": str(config.signal),
        "w": float(config.sampler.guidance.w),
        "per_class": per_class,
        **hashes,
    }


# ================================================================ unguided grids


def run_grid(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Path:
    """Unguided samples of class ids (class models) or prompts (text models) as one PNG grid.

    Rows are classes/prompts, `per_row` samples each; written by process 0 to workdir/grid.png.
    """
    info = inspect_folder(config.pipeline)
    per_row, batch = int(config.per_row), int(config.batch_size)
    scfg = sampler_config(config, info)
    mesh = parallel.data_mesh()
    if batch % mesh.size:
        raise ValueError(f"--config.batch_size={batch} must be a multiple of {mesh.size} devices")
    if info.kind == "class":
        ids = np.asarray(config_ints(config.classes, "classes") or range(info.num_classes))
        bad = [int(i) for i in ids if not 0 <= i < info.num_classes]
        if bad:
            raise ValueError(
                f"class ids {bad} out of range [0, {info.num_classes}); fix --config.classes"
            )
    else:
        prompts = [str(p) for p in _tuple(config.prompts)]
        if not prompts:
            raise ValueError("a text model needs --config.prompts (a list of prompts)")
    decoded_shape(config, info)  # rejects a bad --config.resolution before loading
    pipe = weights.load_pipeline(
        info.path, dtype=DTYPES[config.dtype], remat=config.remat,
        place=lambda x: parallel.replicate(x, mesh),
    )  # fmt: skip
    with workdirs.claim(workdir):  # before sampling: an unwritable workdir fails now
        models_ = diffusion.conditional_models(pipe, _tuple(config.resolution) or None)
        if info.kind == "class":
            cond = np.repeat(ids.astype(np.int32), per_row)
        else:
            cond = diffusion.encode_prompts(
                pipe, [p for p in prompts for _ in range(per_row)], None, config.negative_prompt,
                _tuple(config.resolution) or None,
            )  # fmt: skip
        n = len(jax.tree.leaves(cond)[0])
        sampler = sampling.make_sampler(scfg, models_, mesh)
        params = parallel.replicate(diffusion.pipeline_params(pipe), mesh)
        images = []
        batches = pending_batches(n, set(), batch)
        for indices, write in parallel.progress(batches, "grid", unit="batch"):
            local = parallel.process_batch_slice(batch)
            idx, c = parallel.host_local_to_global(
                (indices[local], take_rows(cond, indices[local])), mesh
            )
            out = _run_sampler(sampler, params, idx, c, config.seed)
            # Process 0 needs every row for the grid: gather the (small) images.
            full = np.asarray(multihost_utils.process_allgather(out.images, tiled=True))
            checks.require_finite({"images": full}, "the grid's images", finite_hint(config))
            images.append(full[write])
        path = Path(workdir) / "grid.png"
        if parallel.is_process_zero():
            io.save_grid(path, np.concatenate(images), columns=per_row)
    return path
