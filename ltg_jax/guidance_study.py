"""Does guidance do what it should? LTG vs unguided samples from the same seeds, side by side.

For every (weight, grad_through) setting, the unguided baseline (w = 0) and the `extra`
settings (a tiny guidance decoder, a stride, a window), `run_ltg` draws the same plan of
samples (same classes, counts, seed); we then report the mean longtail signals of the final
images, the predictor's accuracy on them (lower = harder for it), the oracle's class fidelity
(how much of the class survives), with a mode oracle (`config.mode_oracle`, e.g. the world
benchmark's) the share of the samples in the rare mode, and the cost against unguided
sampling: wall time (with compiles) and XLA's FLOPs of the run's steps. Each setting is its
own resumable LTG run, so an interrupted study picks up where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ltg_jax import (
    evaluation,
    io,
    ltg_sampling,
    metrics,
    mining,
    predictor,
    report,
    sampling,
    workdirs,
)
from ltg_jax.data import synthetic

SIGNALS_REPORTED = ("epistemic", "entropy", "energy")


def setting_name(w: float, grad_through: str) -> str:
    """Folder name of one grid setting, e.g. 'w0' (unguided) or 'w2_z0'."""
    return "w0" if w == 0 else f"w{w:g}_{grad_through}"


def settings(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """The unguided baseline, every (w, grad_through) pair, then the config's `extra` settings.

    Each is {'name', <dotted ltg config overrides>}; an extra setting (e.g. a tiny guidance
    decoder, a stride or a window) names the keys it changes.
    """
    grid = [(0.0, "z0")] + [(float(w), g) for g in config.grad_through for w in config.weights]
    out = [
        {"name": setting_name(w, g), "sampler.guidance.w": w, "sampler.guidance.grad_through": g}
        for w, g in grid
    ]
    return out + [dict(extra) for extra in config.get("extra", ())]


def setting_config(config: ml_collections.ConfigDict, setting: dict[str, Any]):
    """The run_ltg config of one setting: the study's ltg config with the setting's overrides."""
    ltg = copy.deepcopy(config.ltg)
    ltg.update_from_flattened_dict({k: v for k, v in setting.items() if k != "name"})
    ltg.variant = "unguided" if float(ltg.sampler.guidance.w) == 0 else ltg.variant
    return ltg


def run_flops(ltg: ml_collections.ConfigDict) -> float:
    """XLA's FLOPs of a whole run's sampling for one batch (one compiled step of each kind)."""
    setup = ltg_sampling.build(ltg)
    batch = int(ltg.batch_size)
    rows = np.arange(batch) % len(setup.plan.class_ids)
    cond = ltg_sampling.take_rows(setup.cond_table, rows)
    sampler = setup.sampler
    flops = sampling.step_flops(sampler.config, sampler.models, setup.params, cond, batch)
    return sampling.run_flops(flops, sampler.config)


@dataclasses.dataclass(frozen=True)
class ModeJudge:
    """A mode oracle, the id of the rare mode, and the classes whose mode it cannot tell."""

    oracle: predictor.PredictorBundle
    rare: int
    unscored: tuple[int, ...]


def mode_judge(config: ml_collections.ConfigDict, class_names) -> ModeJudge | None:
    """config.mode_oracle as a ModeJudge; None without one."""
    if not str(config.get("mode_oracle", "")):
        return None
    oracle = ltg_sampling.load_bundle(config.mode_oracle, "mode_oracle")
    rare = str(config.rare_mode)
    if rare not in oracle.class_names:
        raise ValueError(
            f"--config.rare_mode={rare!r} is not a class of the mode oracle "
            f"{list(oracle.class_names)}"
        )
    unscored = ltg_sampling.config_names(config.mode_unscored_classes)
    return ModeJudge(
        oracle,
        oracle.class_names.index(rare),
        evaluation.unscored_class_ids(unscored, class_names),
    )


def measure(
    data: synthetic.SyntheticData,
    bundle: predictor.PredictorBundle,
    oracle,
    batch_size: int,
    modes: ModeJudge | None = None,
) -> dict[str, Any]:
    """Mean signals, predictor accuracy, oracle fidelity (and the rare mode's share, with a
    mode oracle) of one setting's samples."""
    signals = {
        name: float(np.mean([row["signals"][name] for row in data.rows]))
        for name in SIGNALS_REPORTED
    }
    predicted = mining.oracle_probs(bundle, data.images, batch_size).argmax(-1)
    fidelity = mining.oracle_probs(oracle, data.images, batch_size).argmax(-1)
    per_sample = {
        "predictor_accuracy": predicted == data.labels,
        "oracle_fidelity": fidelity == data.labels,
    }
    out = {
        **{f"mean_{k}": v for k, v in signals.items()},
        "predictor_accuracy": float(np.mean(per_sample["predictor_accuracy"])),
        "oracle_fidelity": float(np.mean(per_sample["oracle_fidelity"])),
    }
    if modes is not None:
        rare = mining.oracle_probs(modes.oracle, data.images, batch_size).argmax(-1) == modes.rare
        # Faithful: the rare mode *and* still its class; a broken blob the mode oracle calls
        # rare is not the blind spot the method claims to find.
        per_sample["rare_mode"] = rare
        per_sample["faithful_rare_mode"] = rare & per_sample["oracle_fidelity"]
        scored = ~np.isin(data.labels, modes.unscored)
        for key in ("rare_mode", "faithful_rare_mode"):
            share = np.mean(per_sample[key][scored]) if scored.any() else np.nan
            out[f"{key}_rate"] = float(share)
    out["samples"] = int(len(data.labels))
    out["per_class"] = per_class(data, per_sample)
    return out


def per_class(
    data: synthetic.SyntheticData, per_sample: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """{class name: {metric: mean}} of one setting (per-sample booleans in), class-id order."""
    names = {int(row["class_id"]): str(row["class_name"]) for row in data.rows}
    return {
        names[c]: {metric: float(np.mean(v[data.labels == c])) for metric, v in per_sample.items()}
        for c in sorted(names)
    }


def per_class_table(rows: list[dict[str, Any]], metric: str) -> str:
    """Classes down, settings across: `metric` of each class under each setting."""
    classes = list(rows[0]["per_class"])
    table = [
        {"class": name, **{row["setting"]: row["per_class"][name][metric] for row in rows}}
        for name in classes
    ]
    return metrics.format_table(table, precision=3)


def plot_mode_tradeoff(path: str | os.PathLike, rows: list[dict[str, Any]], rare: str) -> Path:
    """Each setting's rare-mode share against its class fidelity: all samples (open) and those
    that still show their class (filled), joined per setting."""
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for row in rows:
        x, ys = row["oracle_fidelity"], (row["rare_mode_rate"], row["faithful_rare_mode_rate"])
        ax.plot([x, x], ys, color="lightgray", zorder=1)
        ax.scatter([x], [ys[0]], facecolors="none", edgecolors="C0", zorder=2)
        ax.scatter([x], [ys[1]], color="C1", zorder=2)
        ax.annotate(row["setting"], (x, ys[0]), textcoords="offset points", xytext=(4, 3),
                    fontsize=7)  # fmt: skip
    ax.scatter([], [], facecolors="none", edgecolors="C0", label=f"{rare}, all samples")
    ax.scatter([], [], color="C1", label=f"{rare} and still its class")
    ax.set_xlabel("class fidelity (oracle)")
    ax.set_ylabel(f"share of the rare mode ({rare})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return report.save_figure(fig, path)


def run_study(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Runs (or resumes) every setting, then writes guidance_study.{json,md} and a grid."""
    workdir = Path(workdir)
    bundle = ltg_sampling.load_bundle(config.ltg.predictor)
    oracle = ltg_sampling.load_bundle(config.oracle, "oracle")
    modes = mode_judge(config, bundle.class_names)
    with workdirs.claim(workdir):  # each setting's run_ltg claims its own subfolder
        return _study(config, workdir, bundle, oracle, modes)


def _study(
    config: ml_collections.ConfigDict, workdir: Path, bundle, oracle, modes: ModeJudge | None
) -> dict[str, Any]:
    """run_study's settings and outputs once the workdir is claimed."""
    rows, grid = [], []
    for setting in settings(config):
        name, ltg = setting["name"], setting_config(config, setting)
        tic = time.time()
        summary = ltg_sampling.run_ltg(ltg, workdir / name)
        data = synthetic.load_synthetic(workdir / name / ltg_sampling.DATA_DIR)
        guide = ltg.sampler.guidance
        row = {
            "setting": name,
            "w": float(guide.w),
            "grad_through": "-" if float(guide.w) == 0 else str(guide.grad_through),
            "decoder": "tiny" if str(ltg.get("tiny_decoder", "")) else "full",
            "cfg": float(ltg.sampler.cfg_scale),
            "window": f"{float(guide.start):g}-{float(guide.end):g}",
        }
        row.update(measure(data, bundle, oracle, int(config.ltg.batch_size), modes))
        row["wall_s"] = float(summary.get("wall_time_s", time.time() - tic))
        row["flops"] = run_flops(ltg)
        rows.append(row)
        grid.append(data.images[:: max(1, len(data.images) // int(config.grid_columns))])
    for row in rows:  # cost against the unguided baseline (the first row)
        row["wall_ratio"] = row["wall_s"] / rows[0]["wall_s"]
        row["flops_ratio"] = row["flops"] / rows[0]["flops"]
    columns = min(len(g) for g in grid)
    io.save_grid(
        workdir / "guidance_study.png", np.concatenate([g[:columns] for g in grid]), columns
    )
    result = {"rows": rows, "signal": str(config.ltg.signal), "config": config.to_dict()}
    io.atomic_write_json(workdir / "guidance_study.json", result)
    if modes:
        plot_mode_tradeoff(workdir / "guidance_study_modes.png", rows, str(config.rare_mode))
    overall = [{k: v for k, v in row.items() if k != "per_class"} for row in rows]
    table = metrics.print_table(overall, title="Longtail Guidance vs unguided (same seeds)")
    by_class = "\n\n".join(
        f"{title}\n```\n{per_class_table(rows, metric)}\n```"
        for metric, title in (
            ("predictor_accuracy", "Predictor accuracy per class"),
            ("oracle_fidelity", "Oracle class fidelity per class"),
            *([("rare_mode", f"Share of the rare mode ({config.rare_mode}) per class"),
               ("faithful_rare_mode", f"Share of the rare mode ({config.rare_mode}) that the "
                "oracle still names as its class, per class")]
              if modes else []),
        )
    )  # fmt: skip
    io.atomic_write_text(
        workdir / "guidance_study.md",
        f"# Guidance study\n\nsignal: `{config.ltg.signal}`, "
        f"{rows[0]['samples']} samples per setting; rows of guidance_study.png follow the "
        f"table's order.\n\n```\n{table}\n```\n\n{by_class}\n",
    )
    return result
