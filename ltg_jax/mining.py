"""The generative data mining loop (docs/design.md §1.3): generate, review, fine-tune, report.

`run_mining(config, workdir)` is what `python -m sample.mine` (and `make mine`) runs; see
configs/mine.py. Stages, each resumable, in `workdir`:

    config.json                      the run's config + input hashes (a rerun must match)
    stages.json                      wall time of each stage when it ran
    synthetic/<arm>/                 run_ltg output per synthetic arm (data/, contact_sheets/)
    finetune/<arm>/seed_<s>/         orbax checkpoints + eval.json of one fine-tuning run
    finetune/<arm>/trained_on.json   fingerprint of the arm's reviewed training set
    review/<arm>.html                the review page of each synthetic arm (review_page.py)
    report.md, report.json, *.png    the report; hardest_ltg.png and clusters/ contact sheets

A changed review (manifest content, oracle filter or tau) is not another run: the review
stage reruns each time, and an arm whose kept samples changed is fine-tuned again (its old
fine-tuning is removed); generation and the other arms are reused.

Arms: `real` (real data only), `unguided` (w = 0) and `ltg`; the two synthetic arms draw the
same count with the same seeds, and every arm is fine-tuned with the same schedule from the
same predictor. `run_selection` sweeps guidance settings on the VALIDATION split.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltg_jax import (
    adapters,
    checks,
    evaluation,
    finetune,
    introspection,
    io,
    ltg_sampling,
    metrics,
    parallel,
    predictor,
    predictor_training,
    report,
    review_page,
    run_record,
    vlm,
    weights,
    workdirs,
)
from ltg_jax.data import datasets, shifts, synthetic

ARMS = ("real", "unguided", "ltg")  # where an arm's images come from
SYNTHETIC_ARMS = ("unguided", "ltg")
# The long-tail baselines a practitioner tries first, as fine-tuning methods an arm adds to its
# data with '+': `real+balanced` (class-balanced resampling), `real+logit_adjusted` (Menon et
# al. 2021), and the same on synthetic data (`ltg+logit_adjusted`). Same budget for all.
FINETUNE_METHODS = ("balanced", "logit_adjusted")
CONFIG_FILE = "config.json"
STAGES_FILE = "stages.json"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
SELECTION_JSON = "selection.json"
MODE_PARTS = ("generated", "kept")  # the samples an arm's mode shares are of
# configs/mine.py variants that run the sweep
SELECT_VARIANTS = ("select", "world_select", "world_select_review")
TRAINED_ON_FILE = "trained_on.json"
REVIEW_DIR = "review"
# Keys free to change on a rerun: the report's shape, what was chosen, the review (a changed
# review reruns the fine-tuning of the arms whose kept samples changed) and the list of arms
# and generation seeds (an added arm or seed is generated and fine-tuned; the finished ones are
# reused); the budget curve's, the selection's and the mode supply's settings do not shape a
# mining run.
RESUME_FREE_PREFIXES = (
    "report.", "guidance_choice", "review.", "arms", "generation_seeds", "eval.shifts",
    "curve.", "select.", "supply.",
)  # fmt: skip


# ================================================================ checks before compute


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The loaded models and their hashes (everything the loop reads besides data)."""

    bundle: predictor.PredictorBundle
    oracle: predictor.PredictorBundle
    class_names: tuple[str, ...]
    hashes: dict[str, str]
    data: datasets.DatasetInfo
    mode_oracle: predictor.PredictorBundle | None = None  # classifies generated images' modes


def check_runs_on_data(
    bundle: predictor.PredictorBundle, field: str, spec: str, shape: tuple[int, int, int]
) -> None:
    """Traces a predictor (through its input adapter) on one image of the dataset's shape."""
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    try:
        jax.eval_shape(bundle.adapted_apply, bundle.params["predictor"], x)
    except Exception as e:
        raise ValueError(
            f"--config.{field}: {spec} does not run on the dataset's {shape} images through its "
            f"input adapter ({type(e).__name__}: {str(e).splitlines()[0][:200]}); check its "
            "input metadata (size, channels) or point at a current one"
        ) from e


def arm_list(config: ml_collections.ConfigDict) -> list[str]:
    """config.arms as names ('--config.arms=real,ltg' arrives as one string)."""
    return list(ltg_sampling.config_names(config.arms))


def generation_list(config: ml_collections.ConfigDict) -> list[int]:
    """config.generation_seeds as integers (an error names the field)."""
    return list(checks.config_ints(config.generation_seeds, "generation_seeds"))


def arm_parts(arm: str) -> tuple[str, str | None]:
    """'ltg+logit_adjusted' -> ('ltg', 'logit_adjusted'); 'real' -> ('real', None)."""
    source, _, method = str(arm).partition("+")
    if source not in ARMS or (method and method not in FINETUNE_METHODS):
        raise ValueError(
            f"--config.arms: {arm!r} is not an arm; use one of {list(ARMS)}, optionally with "
            f"'+' and a fine-tuning method {list(FINETUNE_METHODS)} (e.g. real+balanced)"
        )
    return source, method or None


def arm_finetune_config(config: ml_collections.ConfigDict, arm: str) -> dict[str, Any]:
    """config.finetune with the arm's method: balanced sampling or the logit-adjusted loss."""
    train = config.finetune.to_dict()
    method = arm_parts(arm)[1]
    if method == "balanced":
        train["sampling"] = "class_balanced"
    if method == "logit_adjusted":
        train["logit_adjustment_tau"] = float(config.baselines.logit_adjustment_tau)
    return train


def check_inputs(config: ml_collections.ConfigDict) -> Inputs:
    """Loads and cross-checks predictor, oracle and diffusion folder; errors name the fix.

    Everything a later stage would trip on is checked here, before the workdir is claimed:
    the sampling config of each generated arm, every weight of the model folder (readable and
    finite), and the manifests (parsed, and naming only files the run will write).
    """
    checks.check_config_finite(config)
    arms = arm_list(config)
    for arm in arms:
        arm_parts(arm)
    if not arms or len(set(arms)) != len(arms):
        raise ValueError(f"--config.arms={arms}: give distinct arms (e.g. real,unguided,ltg)")
    data = datasets.describe(config.data)
    bundle = ltg_sampling.load_bundle(config.predictor)
    oracle = ltg_sampling.load_bundle(config.oracle, "oracle")
    for field, b in (("predictor", bundle), ("oracle", oracle)):
        if [n.lower() for n in b.class_names] != [n.lower() for n in data.class_names]:
            raise ValueError(
                f"--config.{field}: its classes {list(b.class_names)} are not the dataset's "
                f"{list(data.class_names)} ({data.name}); use a {field} of this label set, in "
                "this class order"
            )
        check_runs_on_data(b, field, str(config[field]), data.image_shape)
    names = data.class_names
    hashes = {
        "predictor_hash": ltg_sampling.predictor_hash(config.predictor, bundle),
        "oracle_hash": ltg_sampling.predictor_hash(config.oracle, oracle),
    }
    if needs_generation(config):
        info = ltg_sampling.inspect_folder(config.pipeline)
        weights.load_pipeline(info.path, place=lambda x: None)  # reads and checks, keeps none
        hashes["model_hash"] = weights.model_hash(info.path)
    for arm in SYNTHETIC_ARMS:
        check_manifest(config, arm, data)
    vlm_config(config)  # a bad endpoint fails now, not after the run
    eval_shifts(config)
    check_filter(config)
    mode_oracle = None
    if str(config.report.mode_oracle):
        mode_oracle = ltg_sampling.load_bundle(config.report.mode_oracle, "report.mode_oracle")
        check_runs_on_data(
            mode_oracle, "report.mode_oracle", str(config.report.mode_oracle), data.image_shape
        )
        rare = str(config.report.rare_mode)
        if rare not in mode_oracle.class_names:
            raise ValueError(
                f"--config.report.rare_mode={rare!r} is not a class of the mode oracle "
                f"{list(mode_oracle.class_names)}"
            )
        evaluation.unscored_class_ids(
            ltg_sampling.config_names(config.report.mode_unscored_classes), names,
            "report.mode_unscored_classes",
        )  # fmt: skip
    seeds = list(config.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--config.seeds={seeds}: give distinct seeds (at least 3 for a report)")
    generations = generation_list(config)
    if not generations or len(set(generations)) != len(generations):
        raise ValueError(
            f"--config.generation_seeds={generations}: give distinct seeds, e.g. 0,1,2"
        )
    given = [arm for arm in SYNTHETIC_ARMS if str(config.synthetic[arm])]
    if given and len(generations) > 1:
        raise ValueError(
            f"--config.synthetic.{given[0]} is a given dataset, generated once: use one "
            "generation seed (--config.generation_seeds=0)"
        )
    return Inputs(bundle, oracle, names, hashes, data, mode_oracle)


def eval_shifts(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """config.eval.shifts as checked names ('--config.eval.shifts=rotate90,noise')."""
    return shifts.check_shifts(ltg_sampling.config_names(config.eval.shifts))


def arm_files(config: ml_collections.ConfigDict, arm: str, data: datasets.DatasetInfo) -> list:
    """The metadata rows ({'file_name'}) an arm has, or will have once generated.

    A generated arm's sampling config is validated here (a bad one fails before any stage).
    """
    if str(config.synthetic[arm]):
        return synthetic.read_rows(str(config.synthetic[arm]))
    plan = ltg_sampling.validate(arm_ltg_config(config, arm, data))[2]
    return [{"file_name": f} for f in ltg_sampling.planned_files(plan)]


def check_manifest(config: ml_collections.ConfigDict, arm: str, data: datasets.DatasetInfo):
    """The arm's manifest exists, parses and names only files of the arm, before any stage."""
    rows = arm_files(config, arm, data)
    manifest = str(config.review.manifest[arm])
    if not manifest:
        return
    if not Path(manifest).is_file():
        raise FileNotFoundError(
            f"--config.review.manifest.{arm}={manifest}: no such file; write the accept/"
            "reject list (JSON or CSV of file names) there, or set it to '' to use all"
        )
    try:
        synthetic.filter_rows(rows, manifest)
    except ValueError as e:
        raise ValueError(f"--config.review.manifest.{arm}: {e}") from None


def needs_generation(config: ml_collections.ConfigDict) -> bool:
    """True unless every synthetic arm reads an existing dataset (config.synthetic.<arm>)."""
    return any(not str(config.synthetic[arm]) for arm in SYNTHETIC_ARMS)


def check_workdir(workdir: Path, record: Mapping[str, Any]) -> None:
    """Writes config.json on a fresh workdir; refuses one that holds another config's run."""
    path = workdir / CONFIG_FILE
    if not path.is_file():
        io.atomic_write_json(path, record)
        return
    free = tuple(f"config.{p}" for p in RESUME_FREE_PREFIXES)
    saved = io.read_json(path)
    # A key the saved run predates (a later feature's setting) cannot have shaped its outputs.
    known = set(run_record.flatten(saved))
    diffs = run_record.differences(
        saved, record, keep=lambda k: k in known and not k.startswith(free)
    )
    if diffs:
        raise ValueError(
            f"{workdir} holds a mining run of another config or other models ({diffs[:5]}); "
            f"rerun with the config saved in {path} to resume it, or pass a new --workdir"
        )
    if run_record.differences(saved, record) and parallel.is_process_zero():
        io.atomic_write_json(path, record)  # config.json says what the latest review used


# ================================================================ stage bookkeeping


class Stages:
    """Wall time per stage, kept in workdir/stages.json across restarts."""

    def __init__(self, workdir: Path):
        self.path = workdir / STAGES_FILE
        self.times: dict[str, float] = io.read_json(self.path) if self.path.is_file() else {}
        self.ran: list[str] = []  # stages that did work in this invocation

    def record(self, name: str, seconds: float) -> None:
        """Stores a stage's wall time (the time it took when it actually ran)."""
        self.times[name] = round(float(seconds), 3)
        self.ran.append(name)
        if parallel.is_process_zero():
            io.atomic_write_json(self.path, self.times)


# ================================================================ stage 1: generate


def class_budget(config: ml_collections.ConfigDict, data: datasets.DatasetInfo) -> tuple[int, ...]:
    """Samples per class: config.budget.per_class if given, else by the dataset's groups."""
    num_classes = data.num_classes
    explicit = tuple(int(c) for c in config.budget.per_class)
    if explicit:
        if len(explicit) == 1:
            return explicit * num_classes
        if len(explicit) != num_classes:
            raise ValueError(
                f"--config.budget.per_class has {len(explicit)} counts for {num_classes} classes"
            )
        return explicit
    group_of = {k: g for g, ks in data.groups().items() for k in ks}
    return tuple(int(config.budget[group_of.get(k, "many")]) for k in range(num_classes))


def arm_ltg_config(
    config: ml_collections.ConfigDict, arm: str, data: datasets.DatasetInfo, generation: int = 0
) -> ml_collections.ConfigDict:
    """The run_ltg config of a synthetic arm: same counts and seed; `unguided` sets w = 0.

    `generation` (a config.generation_seeds entry) is added to the sampling seed.
    """
    ltg = copy.deepcopy(config.ltg)
    ltg.pipeline, ltg.predictor = str(config.pipeline), str(config.predictor)
    ltg.samples_per_class = class_budget(config, data)
    ltg.seed = int(config.ltg.seed) + int(generation)
    if arm == "unguided":
        ltg.variant = "unguided"
        ltg.sampler.guidance.w = 0.0
    return ltg


def generation_name(arm: str, generation: int) -> str:
    """Folder name of an arm's generation seed: the arm itself for seed 0 (a one-generation
    run's layout), `<arm>_gen<g>` for the others; so seeds can be added to a finished run."""
    return arm if int(generation) == 0 else f"{arm}_gen{int(generation)}"


def generation_source(name: str) -> str:
    """The arm of a generated set's name (the inverse of generation_name)."""
    return name.split("_gen")[0]


def generate(
    config: ml_collections.ConfigDict,
    workdir: Path,
    arm: str,
    data: datasets.DatasetInfo,
    stages: Stages,
    generation: int = 0,
) -> Path:
    """Runs (or resumes, or skips when finished) the LTG sampling of one arm; its data folder."""
    if str(config.synthetic[arm]):
        return Path(str(config.synthetic[arm]))  # an existing (reviewed) dataset
    out = workdir / "synthetic" / generation_name(arm, generation)
    return generate_into(config, out, arm, data, stages, generation)


def generate_into(
    config: ml_collections.ConfigDict,
    out: Path,
    arm: str,
    data: datasets.DatasetInfo,
    stages: Stages,
    generation: int = 0,
) -> Path:
    """run_ltg of one arm into `out` (resumed; skipped once finished); its data folder."""
    if not (out / ltg_sampling.SUMMARY_FILE).is_file():
        tic = time.time()
        ltg_sampling.run_ltg(arm_ltg_config(config, arm, data, generation), out)
        stages.record(f"generate/{out.name}", time.time() - tic)
    return out / ltg_sampling.DATA_DIR


# ================================================================ stage 2: review


def check_class_list(
    rows: Sequence[Mapping[str, Any]], class_names: Sequence[str], root: Path
) -> None:
    """Raises unless every row's (class_id, class_name) is the predictor's class list."""
    bad = sorted(
        {
            (int(r["class_id"]), str(r["class_name"]))
            for r in rows
            if not 0 <= int(r["class_id"]) < len(class_names)
            or str(r["class_name"]) != class_names[int(r["class_id"])]
        }
    )
    if bad:
        raise ValueError(
            f"{root} was generated for another class list: {bad[:5]} do not match the "
            f"predictor's classes {list(class_names)}; regenerate it with this predictor "
            "(python -m sample.ltg --config.predictor=...) or point --config.synthetic at a "
            "dataset of these classes"
        )


def oracle_probs(
    oracle: predictor.PredictorBundle, images: np.ndarray, batch_size: int
) -> np.ndarray:
    """[N, K] oracle class probabilities of images [N,H,W,C] in [-1, 1]."""
    if not len(images):
        return np.zeros((0, oracle.num_classes), np.float32)
    out = predictor_training.predict(
        oracle.adapted_apply, oracle.params["predictor"], images, batch_size
    )
    return np.asarray(jax.nn.softmax(out["logits"], -1))


def fidelity_report(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict:
    """How often the oracle's class is the conditioning class: overall and per class."""
    agree = probs.argmax(-1) == labels if len(labels) else np.zeros(0, bool)
    per_class = {
        n: float(agree[labels == k].mean()) if np.any(labels == k) else float("nan")
        for k, n in enumerate(class_names)
    }
    overall = float(agree.mean()) if agree.size else float("nan")
    return {"overall": overall, "per_class": per_class, "count": int(agree.size)}


def oracle_keep(
    labels: np.ndarray, probs: np.ndarray, tau: float, min_prob: float = 0.0
) -> np.ndarray:
    """[N] bool: the oracle names the conditioning class or gives it probability >= tau, and
    gives it at least `min_prob` (a stricter filter for samples near a class boundary)."""
    if not len(labels):
        return np.zeros(0, bool)
    p_class = np.take_along_axis(probs, labels[:, None], axis=-1)[:, 0]
    return ((probs.argmax(-1) == labels) | (p_class >= tau)) & (p_class >= min_prob)


def check_filter(config: ml_collections.ConfigDict) -> tuple[float, float]:
    """(tau, min_prob) of config.review, refused unless both are probabilities (and so is
    review.max_predictor_prob)."""
    tau, min_prob = float(config.review.oracle_tau), float(config.review.oracle_min_prob)
    values = (("oracle_tau", tau, "oracle"), ("oracle_min_prob", min_prob, "oracle"),
              ("max_predictor_prob", predictor_max_prob(config), "predictor"))  # fmt: skip
    for name, value, whose in values:
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"--config.review.{name}={value}: give a probability in [0, 1] (the {whose}'s "
                "probability of a sample's class)"
            )
    return tau, min_prob


def predictor_max_prob(config: ml_collections.ConfigDict) -> float:
    """config.review.max_predictor_prob (1 = off; configs from before it have none)."""
    return float(config.review.get("max_predictor_prob", 1.0))


def predictor_fails(
    bundle: predictor.PredictorBundle, images: np.ndarray, labels: np.ndarray, max_prob: float,
    batch_size: int,
) -> np.ndarray:  # fmt: skip
    """[N] bool: the predictor gives a sample's class probability below `max_prob` (the samples
    it gets wrong or is unsure of: what mining is for; all True at 1)."""
    if max_prob >= 1.0 or not len(labels):
        return np.ones(len(labels), bool)
    probs = oracle_probs(bundle, images, batch_size)
    return np.take_along_axis(probs, labels[:, None], axis=-1)[:, 0] < max_prob


def to_image_shape(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Generated images [N,h,w,c] -> the real data's [N,H,W,C] (antialiased resize, channels)."""
    if not len(images) or images.shape[1:] == tuple(shape):
        return images
    adapter = adapters.InputAdapter(size=tuple(shape[:2]), channels=int(shape[2]))
    return np.asarray(jax.jit(adapters.adapt, static_argnums=1)(images, adapter))


@dataclasses.dataclass
class ArmData:
    """One synthetic arm after review: everything loaded, and the rows kept for training."""

    images: np.ndarray  # [N, H, W, C] all generated samples, f32 in [-1, 1]
    labels: np.ndarray  # [N] conditioning class
    rows: list[dict[str, Any]]
    keep: np.ndarray  # [N] bool: used for fine-tuning
    summary: dict[str, Any]
    modes: np.ndarray | None = None  # [N] the mode oracle's class, when there is one

    def training_arrays(self) -> dict[str, np.ndarray]:
        """{'image', 'label'} of the kept samples."""
        return {"image": self.images[self.keep], "label": self.labels[self.keep]}


def review(
    config: ml_collections.ConfigDict,
    arm: str,
    data: Path,
    inputs: Inputs,
    manifest: str | None = None,
) -> ArmData:
    """Loads an arm's data, checks its classes, applies the manifest and the oracle filter.

    `manifest` defaults to the arm's (config.review.manifest); "" reviews with none.
    """
    manifest = str(config.review.manifest[arm]) if manifest is None else manifest
    loaded = synthetic.load_synthetic(data)
    check_class_list(loaded.rows, inputs.class_names, data)
    loaded = loaded._replace(images=to_image_shape(loaded.images, inputs.data.image_shape))
    n = len(loaded.rows)
    keep = np.ones(n, bool)
    by_manifest = 0
    if manifest:
        kept_files = {r["file_name"] for r in synthetic.filter_rows(loaded.rows, manifest)}
        keep = np.asarray([r["file_name"] in kept_files for r in loaded.rows], bool)
        by_manifest = int(n - keep.sum())
    probs = oracle_probs(inputs.oracle, loaded.images, int(config.eval.batch_size))
    fidelity = fidelity_report(loaded.labels, probs, inputs.class_names)
    by_oracle = 0
    if config.review.oracle_filter:
        passed = oracle_keep(loaded.labels, probs, *check_filter(config))
        by_oracle = int((keep & ~passed).sum())
        keep &= passed
    hard = predictor_fails(inputs.bundle, loaded.images, loaded.labels,
                           predictor_max_prob(config), int(config.eval.batch_size))  # fmt: skip
    by_predictor = int((keep & ~hard).sum())
    keep &= hard
    modes = None
    if inputs.mode_oracle is not None:
        mode_probs = oracle_probs(inputs.mode_oracle, loaded.images, int(config.eval.batch_size))
        modes = mode_probs.argmax(-1)
    decisions = synthetic.manifest_decisions(manifest, loaded.rows) if manifest else {}
    rows = [
        row | oracle_verdict(p, label, inputs.class_names) | decisions.get(row["file_name"], {})
        for row, p, label in zip(loaded.rows, probs, loaded.labels, strict=True)
    ]
    names = sorted({s for r in loaded.rows for s in r["signals"]})
    mean_signals = {s: float(np.nanmean([r["signals"].get(s, np.nan) for r in loaded.rows]))
                    for s in names}  # fmt: skip
    summary = {
        "root": str(data),
        "generated": n,
        "reviewed": sum(d["decision"] != "unreviewed" for d in decisions.values()),
        "kept": int(keep.sum()),
        "rejected_by_manifest": by_manifest,
        "rejected_by_oracle": by_oracle,
        "rejected_as_easy": by_predictor,
        "label_fidelity": fidelity,
        "kept_per_class": {
            nm: int(np.sum(keep & (loaded.labels == k))) for k, nm in enumerate(inputs.class_names)
        },
        "mean_signals": mean_signals,
    }
    if modes is not None:
        summary["modes"] = evaluation.mode_shares(
            modes, loaded.labels, keep, inputs.mode_oracle.class_names, inputs.class_names,
            ltg_sampling.config_names(config.report.mode_unscored_classes),
        )  # fmt: skip
    return ArmData(loaded.images, loaded.labels, rows, keep, summary, modes)


def oracle_verdict(probs: np.ndarray, label: int, class_names: Sequence[str]) -> dict[str, Any]:
    """The oracle's class, its probability and whether it names the sample's class."""
    k = int(np.argmax(probs))
    return {
        "oracle_class": k,
        "oracle_name": str(class_names[k]),
        "oracle_prob": float(probs[k]),
        "oracle_agrees": k == int(label),
    }


# ================================================================ stage 3: fine-tune + evaluate


def empty_arrays(like: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{'image': [0,H,W,C], 'label': [0]} shaped like a real split (the `real` arm's synthetic)."""
    return {"image": like["image"][:0], "label": like["label"][:0]}


def finetune_arm(
    config: ml_collections.ConfigDict,
    workdir: Path,
    arm: str,
    inputs: Inputs,
    real: Mapping[str, np.ndarray],
    synthetic_arrays: Mapping[str, np.ndarray],
    eval_arrays: Mapping[str, Mapping[str, np.ndarray]],
    stages: Stages,
    train_config: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Fine-tunes and evaluates every seed of an arm (finished seeds are read, not redone).

    `arm` names the folder under finetune/ (`<arm>_gen<g>` for later generations);
    `train_config` defaults to the arm's (`arm_finetune_config`).

    Finished seeds count only if they trained on these synthetic arrays: after a changed
    review the arm's old fine-tuning is removed and redone.
    """
    forget_stale_finetuning(workdir / "finetune" / arm, synthetic_arrays)
    results = []
    for seed in config.seeds:
        run_dir = workdir / "finetune" / arm / f"seed_{int(seed)}"
        fresh = not (run_dir / finetune.EVAL_FILE).is_file()
        tic = time.time()
        results.append(
            finetune.finetune_and_evaluate(
                inputs.bundle,
                real,
                synthetic_arrays,
                eval_arrays,
                dict(train_config or arm_finetune_config(config, arm)),
                int(seed),
                run_dir,
                inputs.data,
                int(config.eval.batch_size),
                desc=f"fine-tune {arm} seed {int(seed)}",
            )
        )
        if fresh:
            stages.record(f"finetune/{arm}/seed_{int(seed)}", time.time() - tic)
    return results


def arrays_fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of a training set's arrays (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}{a.shape}{a.dtype}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def forget_stale_finetuning(arm_dir: Path, synthetic_arrays: Mapping[str, np.ndarray]) -> bool:
    """Removes an arm's fine-tuning done on other synthetic data; True when it did."""
    fingerprint = arrays_fingerprint(synthetic_arrays)
    record = arm_dir / TRAINED_ON_FILE
    stale = arm_dir.exists() and (
        not record.is_file() or io.read_json(record)["fingerprint"] != fingerprint
    )
    parallel.sync("finetune_checked")  # every process has looked before anyone removes
    if parallel.is_process_zero():
        if stale:
            shutil.rmtree(arm_dir)
        io.atomic_write_json(
            record, {"fingerprint": fingerprint, "num_synthetic": len(synthetic_arrays["label"])}
        )
    parallel.sync("finetune_forgotten")
    return stale


def load_real(config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
    """{'image' [N,H,W,C], 'label' [N]} of a split of the real (long-tailed) data."""
    limit = int(config.eval.max_examples) if split != "train" else int(config.max_train_examples)
    return datasets.load_split(config.data, split, limit)


def load_eval_splits(config: ml_collections.ConfigDict, split: str) -> dict[str, dict]:
    """{split: its arrays} and one entry per config.eval.shifts ('test+rotate90': rotated)."""
    arrays = load_real(config, split)
    return {split: arrays} | shifts.shifted_splits(split, arrays, eval_shifts(config))


# ================================================================ the loop


def run_mining(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """The whole loop into `workdir` (resumable stage by stage); returns report.json's content."""
    start = time.time()
    workdir = Path(workdir)
    inputs = check_inputs(config)  # every check before any compute or write
    with workdirs.claim(workdir):
        return _mine(config, workdir, inputs, start)


def _mine(
    config: ml_collections.ConfigDict, workdir: Path, inputs: Inputs, start: float
) -> dict[str, Any]:
    """run_mining's stages once the workdir is claimed."""
    check_workdir(workdir, run_record.make(config, **inputs.hashes))
    stages = Stages(workdir)

    # ---- 1. generate (LTG and unguided: same counts, same seeds), once per generation seed
    generations = generation_list(config)
    data = {
        (arm, g): generate(config, workdir, arm, inputs.data, stages, g)
        for g in generations
        for arm in SYNTHETIC_ARMS
    }

    # ---- 2. review: manifest (the first generation's, which the review pages show) + oracle
    # filter, label fidelity, mean signals
    tic = time.time()
    by_generation = {
        (arm, g): review(config, arm, data[arm, g], inputs, None if g == generations[0] else "")
        for arm, g in parallel.progress(list(data), "review", unit="arm")
    }  # fmt: skip
    reviewed = {arm: by_generation[arm, generations[0]] for arm in SYNTHETIC_ARMS}
    stages.record("review", time.time() - tic)

    # ---- 3. fine-tune every (arm, seed) from the shipped predictor, evaluate on test
    tic = time.time()
    real = load_real(config, "train")
    eval_arrays = load_eval_splits(config, str(config.eval.split))
    stages.record("load_data", time.time() - tic)
    results = {}  # arm -> generation (None for real data only) -> the seeds' results
    for arm in arm_list(config):
        source = arm_parts(arm)[0]
        if source == "real":  # no generated data: fine-tuned once, whatever the generations
            syn = empty_arrays(real)
            results[arm] = {None: finetune_arm(config, workdir, arm, inputs, real, syn,
                                               eval_arrays, stages)}  # fmt: skip
            continue
        results[arm] = {
            g: finetune_arm(config, workdir, generation_name(arm, g), inputs, real,
                            by_generation[source, g].training_arrays(), eval_arrays, stages,
                            arm_finetune_config(config, arm))
            for g in generations
        }  # fmt: skip
    tic = time.time()
    base = {
        name: finetune.evaluate(
            inputs.bundle, inputs.bundle.params["predictor"], arrays,
            int(config.eval.batch_size), inputs.data,
        )
        for name, arrays in eval_arrays.items()
    }  # fmt: skip
    stages.record("evaluate_shipped", time.time() - tic)

    # ---- 4. report: process 0 writes it, the others read what it wrote
    if parallel.is_process_zero():
        tic = time.time()
        summaries = {generation_name(arm, g): d.summary for (arm, g), d in by_generation.items()}
        out = write_report(
            config, workdir, inputs, reviewed, summaries, results, base, real, stages, start
        )
        stages.record("report", time.time() - tic)
        out["stage_wall_time_s"] = dict(stages.times)
        # A resumed invocation is short; the stages' sum is what the whole run cost.
        out["stage_wall_time_total_s"] = round(sum(stages.times.values()), 3)
        out["wall_time_s"] = round(time.time() - start, 3)
        io.atomic_write_json(workdir / REPORT_JSON, out)
        io.atomic_write_text(workdir / REPORT_MD, report.markdown(out))
    parallel.sync("mining_reported")
    return io.read_json(workdir / REPORT_JSON)


def verdict(arms: Mapping[str, Mapping[str, Any]]) -> str:
    """Whether LTG beats unguided on few-shot accuracy beyond the seed spread (plain words)."""
    if not {"ltg", "unguided"} <= set(arms):
        return "LTG vs unguided: not both arms were run."
    a, b = arms["ltg"]["few"], arms["unguided"]["few"]
    gap, spread = a["mean"] - b["mean"], a["std"] + b["std"]
    if gap > spread:
        word = "beats"
    elif gap < -spread:
        word = "is worse than"
    else:
        word = "is within the seed spread of"
    return (
        f"LTG {word} unguided synthetic data on few-shot test accuracy: "
        f"{a['mean']:.4f} vs {b['mean']:.4f} (gap {gap:+.4f}, sum of stds {spread:.4f}; "
        f"{a['n']} runs each: generation x fine-tuning seeds)."
    )


def write_report(
    config: ml_collections.ConfigDict,
    workdir: Path,
    inputs: Inputs,
    reviewed: Mapping[str, ArmData],
    summaries: Mapping[str, Mapping[str, Any]],
    results: Mapping[str, Mapping[Any, Sequence[Mapping[str, Any]]]],
    base: Mapping[str, Any],
    real: Mapping[str, np.ndarray],
    stages: Stages,
    start: float,
) -> dict[str, Any]:
    """PNGs, contact sheets and k-means clusters; returns report.json's content.

    `reviewed`: each synthetic arm's first generation (pictures, clusters, review pages);
    `summaries`: the review summary of every generated set (`<arm>[_gen<g>]`).
    """
    split = str(config.eval.split)
    arms = {
        arm: report.aggregate_generations(
            {g: [r[split] for r in rs] for g, rs in by_generation.items()}
        )
        for arm, by_generation in results.items()
    }
    names = list(inputs.class_names)
    bar = parallel.progress(total=2, desc="report", unit="part")
    report.plot_group_bars(workdir / "accuracy_groups.png", arms)
    report.plot_per_class(workdir / "accuracy_per_class.png", arms, names)
    report.plot_fidelity(
        workdir / "label_fidelity.png",
        {arm: r.summary["label_fidelity"] for arm, r in reviewed.items()},
    )
    bar.update(1)
    clusters: list[dict[str, Any]] = []
    blind_spots, vlm_error = {}, None
    if "ltg" in reviewed and len(reviewed["ltg"].rows):
        ltg = reviewed["ltg"]
        scores = np.asarray([r["signals"].get("guidance", np.nan) for r in ltg.rows])
        per_class = int(config.report.hardest_per_class)
        introspection.hardest_sheet(
            ltg.images, ltg.labels, scores, workdir / "hardest_ltg.png", per_class, names, ltg.rows
        )
        features = predictor_training.predict(
            inputs.bundle.adapted_apply,
            inputs.bundle.params["predictor"],
            ltg.images,
            int(config.eval.batch_size),
        )["features"]
        clusters = introspection.cluster_hardest(
            ltg.images, features, ltg.labels, scores, names, workdir / "clusters",
            per_class=per_class, num_clusters=int(config.report.clusters),
            columns=int(config.report.sheet_columns), rows=ltg.rows,
        )  # fmt: skip
        ref_arm = reviewed.get("unguided", ltg)
        references = {k: ref_arm.images[ref_arm.labels == k] for k in np.unique(ltg.labels)}
        introspection.describe_clusters(clusters, ltg.images, references)
        blind_spots, vlm_error = explain(config, clusters, ltg.images, references)
    bar.update(1)
    bar.close()
    pages = write_review_pages(config, workdir, reviewed, names)
    for arm, arm_report in arms.items():  # None for `real`: it trains on no generated data
        source = arm_parts(arm)[0]
        fids = [s["label_fidelity"]["overall"] for name, s in summaries.items()
                if generation_source(name) == source]  # fmt: skip
        arm_report["label_fidelity"] = float(np.mean(fids)) if fids else None
    filtering = [
        f"`{arm}`: {s['generated']} generated, {s['rejected_by_manifest']} rejected by the "
        f"manifest, {s['rejected_by_oracle']} by the oracle filter, "
        f"{s.get('rejected_as_easy', 0)} as easy for the predictor, {s['kept']} kept"
        + (" (none left: this arm trained on real data only)" if not s["kept"] else "")
        for arm, s in summaries.items()
    ]
    tau, min_prob = check_filter(config)
    rule = (
        f"oracle filter on (keep a sample when the oracle's class is its conditioning class or "
        f"the oracle gives that class probability >= tau = {tau}"
        + (f", and that probability is >= {min_prob})" if min_prob > 0 else ")")
        if config.review.oracle_filter
        else "oracle filter off"
    )
    shifted = shifted_results(results, split, eval_shifts(config), base)
    diagnostics = class_diagnostics(arms, summaries, reviewed, real, inputs.data)
    modes = mode_summary(config, inputs, summaries, reviewed, clusters)
    return {
        "kpis": kpis(arms, summaries, stages.times) | mode_kpis(shifted, modes, summaries),
        "review_pages": pages,
        "variant": str(config.variant),
        "split": split,
        "seeds": [int(s) for s in config.seeds],
        "generation_seeds": generation_list(config),
        "arms": arms,
        "arm_order": arm_list(config),
        "base": {g: base[split][g] for g in report.GROUP_KEYS},
        "shifted": shifted,
        "per_class_diagnostics": diagnostics,
        "modes": modes,
        "synthetic": summaries,
        "filtering_note": f"{rule}; " + "; ".join(filtering) + ".",
        "verdict": verdict(arms),
        "clusters": introspection.summarize_clusters(clusters),
        "cluster_reference": "unguided" if "unguided" in reviewed else "ltg (whole class)",
        "blind_spots": blind_spots,
        "vlm_error": vlm_error,
        "images_generated": int(sum(s["generated"] for s in summaries.values())),
        "finetune": config.finetune.to_dict(),
        "guidance": config.ltg.sampler.guidance.to_dict() | {"signal": str(config.ltg.signal)},
        "guidance_choice": str(config.guidance_choice),
        "stages_run_this_time": list(stages.ran),
        "wall_time_s": round(time.time() - start, 3),
        "stage_wall_time_s": dict(stages.times),
        **inputs.hashes,
    }


def ink(images: np.ndarray) -> float:
    """Mean brightness in [0, 1] of images in [-1, 1]: low for faint (thin, dim) garments."""
    return float(np.mean((images + 1.0) / 2.0)) if len(images) else float("nan")


def class_diagnostics(
    arms: Mapping[str, Mapping[str, Any]],
    summaries: Mapping[str, Mapping[str, Any]],
    reviewed: Mapping[str, ArmData],
    real: Mapping[str, np.ndarray],
    data: datasets.DatasetInfo,
) -> list[dict[str, Any]]:
    """Per class, where synthetic data helps or hurts: each arm's accuracy (mean over runs)
    and where its errors go, LTG minus unguided, and for each synthetic arm its label
    fidelity and kept samples (means over generation seeds) and the ink of its kept samples
    relative to the real images'."""
    group_of = {k: g for g, ks in data.groups().items() for k in ks}
    rows = []
    for k, name in enumerate(data.class_names):
        row: dict[str, Any] = {"class": name, "group": group_of.get(k, "")}
        for arm, a in arms.items():
            row[f"accuracy_{arm}"] = a["per_class"][name]["mean"]
            if "confused_with" in a:
                row[f"confused_with_{arm}"] = a["confused_with"][name]
        if {"ltg", "unguided"} <= set(arms):
            row["ltg_minus_unguided"] = row["accuracy_ltg"] - row["accuracy_unguided"]
        real_ink = ink(real["image"][real["label"] == k])
        for arm in SYNTHETIC_ARMS:
            sets = [s for n, s in summaries.items() if generation_source(n) == arm]
            if not sets:
                continue
            fids = [s["label_fidelity"]["per_class"].get(name) for s in sets]
            fids = [f for f in fids if f is not None and not np.isnan(f)]  # None: no samples
            row[f"fidelity_{arm}"] = float(np.mean(fids)) if fids else None
            row[f"kept_{arm}"] = float(np.mean([s["kept_per_class"].get(name, 0) for s in sets]))
            if arm in reviewed:
                arm_data = reviewed[arm]
                picked = arm_data.images[arm_data.keep & (arm_data.labels == k)]
                has_both = len(picked) and not np.isnan(real_ink)
                row[f"relative_ink_{arm}"] = ink(picked) / real_ink if has_both else None
        rows.append(row)
    return rows


def shifted_results(
    results: Mapping[str, Mapping[Any, Sequence[Mapping[str, Any]]]],
    split: str,
    shift_names: Sequence[str],
    base: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Per shift: each arm's accuracy on the shifted split (as `arms`) and the shipped one's."""
    out = {}
    for shift in shift_names:
        name = shifts.shifted_name(split, shift)
        out[shift] = {
            "split": name,
            "arms": {
                arm: report.aggregate_generations(
                    {g: [r[name] for r in rs] for g, rs in by_generation.items()}
                )
                for arm, by_generation in results.items()
            },
            "base": {g: base[name][g] for g in report.GROUP_KEYS},
        }
    return out


def mode_summary(
    config: ml_collections.ConfigDict,
    inputs: Inputs,
    summaries: Mapping[str, Mapping[str, Any]],
    reviewed: Mapping[str, ArmData],
    clusters: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The rare mode's share per generated set (mode oracle) and how well the clusters of the
    hardest LTG samples isolate it; {} without a mode oracle."""
    if inputs.mode_oracle is None:
        return {}
    rare = str(config.report.rare_mode)
    rates = {
        name: {part: s["modes"][part][rare] for part in MODE_PARTS} for name, s in summaries.items()
    }
    per_class = {
        name: {c: s["modes"]["per_class"].get(c, {}).get(rare) for c in inputs.class_names}
        for name, s in summaries.items()
    }
    out: dict[str, Any] = {
        "rare_mode": rare,
        "rare_rate": rates,
        "rare_rate_per_class": per_class,
        "unscored_classes": list(ltg_sampling.config_names(config.report.mode_unscored_classes)),
    }
    ltg = reviewed.get("ltg")
    if ltg is not None and ltg.modes is not None and clusters:
        rare_id = inputs.mode_oracle.class_names.index(rare)
        out["isolation"] = introspection.mode_isolation(clusters, ltg.modes == rare_id)
    return out


def vlm_config(config: ml_collections.ConfigDict) -> vlm.VLMConfig | None:
    """The VLM endpoint of config.report.vlm, or None when no endpoint is set."""
    v = config.report.vlm
    if not str(v.endpoint):
        return None
    return vlm.VLMConfig(
        endpoint=str(v.endpoint), model=str(v.model), api_key_env=str(v.api_key_env),
        timeout_s=float(v.timeout_s), max_tokens=int(v.max_tokens),
    )  # fmt: skip


def explain(
    config: ml_collections.ConfigDict,
    clusters: Sequence[dict[str, Any]],
    images: np.ndarray,
    references: Mapping[int, np.ndarray],
) -> tuple[dict[str, str], str | None]:
    """VLM answers per cluster and blind spots per class; (blind spots, error or None).

    For text pipelines each class's entry is {'summary', 'prompts'}: prompts for targeted
    generation of what the predictor misses.

    Optional and last: a failing endpoint does not cost the report; its error goes there.
    """
    settings = vlm_config(config)
    if settings is None:
        return {}, None
    try:
        spots = introspection.explain_with_vlm(settings, clusters, images, references)
        if ltg_sampling.inspect_folder(config.pipeline).kind == "text":
            for name, text in spots.items():  # prompts for targeted runs of a text model
                prompts = vlm.targeted_prompts(settings, name, text)
                spots[name] = {"summary": text, "prompts": prompts}
        return spots, None
    except vlm.VLMError as e:
        print(f"warning: no VLM explanations in the report: {e}", file=sys.stderr)
        return {}, str(e)


def write_review_pages(
    config: ml_collections.ConfigDict,
    workdir: Path,
    reviewed: Mapping[str, ArmData],
    class_names: Sequence[str],
) -> dict[str, str]:
    """review/<arm>.html for each synthetic arm, opened with its manifest's decisions.

    Beside each page, review/<arm>.jsonl: every sample's metadata row with the oracle's
    verdict, the manifest's decision and note, and `used_for_training`.
    """
    pages = {}
    for arm, data in reviewed.items():
        if not data.rows:
            continue
        io.atomic_write_text(
            workdir / REVIEW_DIR / f"{arm}.jsonl",
            "".join(io.dumps(r | {"used_for_training": bool(k)}) + "\n"
                    for r, k in zip(data.rows, data.keep, strict=True)),
        )  # fmt: skip
        guidance = data.rows[0].get("guidance", "")
        path = review_page.write_page(
            workdir / REVIEW_DIR / f"{arm}.html", data.summary["root"], data.rows, class_names,
            name=arm, manifest=str(config.review.manifest[arm]) or None,
            title=f"{arm}: {len(data.rows)} generated samples (guidance: {guidance}) - "
            f"review, then export the manifest",
        )  # fmt: skip
        pages[arm] = path.relative_to(workdir).as_posix()
    return pages


def gain(
    arms: Mapping[str, Mapping[str, Any]], arm: str, base: str, group: str
) -> dict[str, float] | None:
    """`arm` minus `base` on a group's mean accuracy, with the sum of their stds as the spread;
    None unless both arms ran."""
    if not {arm, base} <= set(arms):
        return None
    a, b = arms[arm][group], arms[base][group]
    return {"gain": a["mean"] - b["mean"], "std": a["std"] + b["std"]}


def kpis(
    arms: Mapping[str, Mapping[str, Any]],
    summaries: Mapping[str, Mapping[str, Any]],
    stage_times: Mapping[str, float],
) -> dict[str, Any]:
    """The numbers a manager reads first: gains, data counts and cost."""
    out: dict[str, Any] = {}
    out["few_shot_gain_vs_unguided"] = gain(arms, "ltg", "unguided", "few")
    if out["few_shot_gain_vs_unguided"] and "per_generation" in arms["ltg"]:
        # Paired by generation seed (the same noise for both arms): one gain per generation.
        out["few_shot_gain_vs_unguided"]["per_generation"] = {
            g: m["few"] - arms["unguided"]["per_generation"][g]["few"]
            for g, m in arms["ltg"]["per_generation"].items()
        }
    out["few_shot_gain_vs_real"] = gain(arms, "ltg", "real", "few")
    baselines = [a for a in arms if arm_parts(a)[0] == "real" and arm_parts(a)[1]]
    if baselines and "ltg" in arms:  # the best real-data-only baseline on few-shot accuracy
        best = max(baselines, key=lambda a: arms[a]["few"]["mean"])
        out["few_shot_gain_vs_best_baseline"] = {"baseline": best, **gain(arms, "ltg", best, "few")}
    # Worst class: the class each arm gets least right (means over seeds).
    out["worst_class"] = {
        arm: min(
            ({"class": n, "accuracy": v["mean"]} for n, v in a["per_class"].items()),
            key=lambda c: c["accuracy"],
        )
        for arm, a in arms.items()
    }
    out["generated"] = int(sum(s["generated"] for s in summaries.values()))
    out["reviewed"] = int(sum(s.get("reviewed", 0) for s in summaries.values()))
    out["used_for_training"] = int(sum(s["kept"] for s in summaries.values()))
    generation_s = sum(t for k, t in stage_times.items() if k.startswith("generate/"))
    out["generation_images_per_s"] = (
        round(out["generated"] / generation_s, 3) if generation_s and out["generated"] else None
    )
    out["wall_time_s"] = round(sum(stage_times.values()), 1)
    return out


def mode_kpis(
    shifted: Mapping[str, Any],
    modes: Mapping[str, Any],
    summaries: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """LTG vs unguided on each shifted test set, and the rare mode's rate in their data."""
    out: dict[str, Any] = {}
    gains = {
        shift: g
        for shift, s in shifted.items()
        if (g := gain(s["arms"], "ltg", "unguided", "overall")) is not None
    }
    if gains:
        out["shift_gain_vs_unguided"] = gains

    def mean_over(arm: str, value) -> float | None:
        values = [value(name) for name in summaries if generation_source(name) == arm]
        return float(np.mean(values)) if values else None

    if modes:
        rate = {
            arm: mean_over(arm, lambda n: modes["rare_rate"][n]["generated"])
            for arm in SYNTHETIC_ARMS
        }
        if None not in rate.values():
            out["rare_mode_rate"] = {
                "mode": modes["rare_mode"],
                **rate,
                "ratio": rate["ltg"] / rate["unguided"] if rate["unguided"] else float("inf"),
                "ltg_label_fidelity": mean_over(
                    "ltg", lambda n: summaries[n]["label_fidelity"]["overall"]
                ),
            }
    return out


def headline(out: Mapping[str, Any], workdir: str | os.PathLike) -> str:
    """The closing lines: where the report is, and the 3 arms x groups table."""
    order = out.get("arm_order") or ARMS  # JSON sorts keys: the config's order
    arms = {arm: out["arms"][arm] for arm in order if arm in out["arms"]}
    table = report.headline_table(
        arms,
        f"{out['split']} accuracy, mean ± std over fine-tuning seeds {out['seeds']} x "
        f"generation seeds {out.get('generation_seeds', [0])} "
        f"(wall time {out['wall_time_s']:.0f} s)",
    )
    return f"report: {Path(workdir) / REPORT_MD} (+ {REPORT_JSON}, PNGs)\n{table}"


# ================================================================ guidance selection (validation)


# Candidate keys under these blocks change the loop's fine-tuning mix or filter; every other
# key is a key of the ltg (sampling) config.
LOOP_CANDIDATE_BLOCKS = ("finetune.", "review.")


def candidate_config(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """The loop config of one candidate: its dotted overrides of config.ltg, or of
    config.finetune / config.review where a key starts with that block."""
    keys = {k: v for k, v in overrides.items() if k != "name"}
    loop = {k: v for k, v in keys.items() if k.startswith(LOOP_CANDIDATE_BLOCKS)}
    # ConfigDict would add a misspelt key as a new leaf: the candidate would silently be a
    # copy of the default.
    paths = {k: (k if k in loop else f"ltg.{k}").split(".") for k in keys}
    unknown = [k for k, p in paths.items() if checks.found_key_parts(config, p)[0] < len(p)]
    if unknown:
        raise ValueError(
            f"select candidate {overrides.get('name')!r}: unknown keys {unknown}; a candidate "
            f"names keys of the ltg config, or of {[b[:-1] for b in LOOP_CANDIDATE_BLOCKS]}"
        )
    out = copy.deepcopy(config)
    out.ltg.update_from_flattened_dict({k: v for k, v in keys.items() if k not in loop})
    out.update_from_flattened_dict(loop)
    return out


def selection_key(
    validation: Mapping[str, Mapping[str, float]], group: str = "few"
) -> tuple[float, float]:
    """Ranks a candidate: its validation accuracy on `group`, then overall (means over seeds)."""
    return validation[group]["mean"], validation["overall"]["mean"]


def run_selection(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Sweeps config.select.candidates on the validation split: generate, fine-tune, evaluate.

    Every candidate (and the `real` and `unguided` baselines) is fine-tuned with the same
    schedule and seeds; the pick is the best accuracy on config.select.rank_group (few-shot by
    default; overall breaks ties) of the split config.select.rank_by (validation or a shifted
    copy of it). Never reads the test split.
    """
    start = time.time()
    workdir = Path(workdir)
    if str(config.eval.split) != "validation":
        raise ValueError("selection must use --config.eval.split=validation, never test")
    inputs = check_inputs(config)
    with workdirs.claim(workdir):
        return _select(config, workdir, inputs, start)


def _select(
    config: ml_collections.ConfigDict, workdir: Path, inputs: Inputs, start: float
) -> dict[str, Any]:
    """run_selection's sweep once the workdir is claimed."""
    check_workdir(workdir, run_record.make(config, **inputs.hashes))
    stages = Stages(workdir)
    real = load_real(config, "train")
    val = load_eval_splits(config, "validation")
    rank_by = str(config.select.rank_by)
    if rank_by not in val:
        raise ValueError(f"--config.select.rank_by={rank_by!r}: use one of {list(val)}")
    rank_group = str(config.select.rank_group)
    if rank_group not in report.GROUP_KEYS:
        raise ValueError(
            f"--config.select.rank_group={rank_group!r}: use one of {list(report.GROUP_KEYS)}"
        )
    rows: dict[str, dict[str, Any]] = {}
    candidates = [dict(c) for c in config.select.candidates]
    runs = [("real", None), ("unguided", None)] + [(str(c["name"]), c) for c in candidates]
    # A candidate that changes only the fine-tuning mix or the filter fine-tunes on the
    # samples of the first candidate with its sampling config (keyed by that config).
    sampled_into: dict[str, Path] = {}
    for name, cand in runs:
        cfg = config if cand is None else candidate_config(config, cand)
        sub = workdir / "candidates" / name
        sub.mkdir(parents=True, exist_ok=True)
        if name == "real":
            syn_arrays, summary = empty_arrays(real), {}
        else:
            arm = "unguided" if name == "unguided" else "ltg"
            sampling = run_record.plain(arm_ltg_config(cfg, arm, inputs.data))
            source = sampled_into.setdefault(json.dumps(sampling, sort_keys=True), sub)
            data = generate_into(cfg, source, arm, inputs.data, stages)
            arm_data = review(cfg, arm, data, inputs)
            syn_arrays, summary = arm_data.training_arrays(), arm_data.summary
        res = finetune_arm(
            cfg, sub, "run", inputs, real, syn_arrays, val, stages, cfg.finetune.to_dict()
        )
        aggs = {split: report.aggregate_arm([r[split] for r in res]) for split in val}
        rows[name] = {
            "overrides": {k_: v for k_, v in (cand or {}).items() if k_ != "name"},
            **{split: {g: agg[g] for g in report.GROUP_KEYS} for split, agg in aggs.items()},
            "label_fidelity": summary.get("label_fidelity", {}).get("overall"),
            "kept": summary.get("kept"),
            # The mode oracle's shares of the generated and of the kept samples.
            "modes": {k_: v for k_, v in summary.get("modes", {}).items() if k_ in MODE_PARTS},
        }
    picks = [n for n in rows if n not in ("real", "unguided")]
    best = max(picks, key=lambda n: selection_key(rows[n][rank_by], rank_group)) if picks else None
    out = {
        "candidates": rows,
        "best": best,
        "criterion": f"{rank_by} {rank_group} accuracy (mean over seeds), then overall",
        "seeds": [int(s) for s in config.seeds],
        "stage_wall_time_s": dict(stages.times),
        "wall_time_s": round(time.time() - start, 3),
    }
    io.atomic_write_json(workdir / SELECTION_JSON, out)
    metrics.print_table(
        [
            {
                "candidate": n,
                **{g: r[rank_by][g]["mean"] for g in report.GROUP_KEYS},
                "fidelity": r["label_fidelity"]
                if r["label_fidelity"] is not None
                else float("nan"),
            }
            for n, r in rows.items()
        ],  # fmt: skip
        title=f"{rank_by} accuracy per guidance candidate (best: {best})",
    )
    return out
