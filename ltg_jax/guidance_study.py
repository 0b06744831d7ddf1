"""Does guidance do what it should? LTG vs unguided samples from the same seeds, side by side.

For every (weight, grad_through) setting and the unguided baseline (w = 0), `run_ltg` draws
the same plan of samples (same classes, counts, seed); we then report the mean longtail
signals of the final images, the predictor's accuracy on them (lower = harder for it) and the
oracle's class fidelity (how much of the class survives). Each setting is its own resumable
LTG run, so an interrupted study picks up where it stopped.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ltg_jax import io, ltg_sampling, metrics, mining, predictor, workdirs
from ltg_jax.data import synthetic

SIGNALS_REPORTED = ("epistemic", "entropy", "energy")


def setting_name(w: float, grad_through: str) -> str:
    """Folder name of one setting, e.g. 'w0' (unguided) or 'w2_z0'."""
    return "w0" if w == 0 else f"w{w:g}_{grad_through}"


def settings(config: ml_collections.ConfigDict) -> list[tuple[float, str]]:
    """The unguided baseline first, then every (w, grad_through) pair of the config."""
    return [(0.0, "z0")] + [(float(w), g) for g in config.grad_through for w in config.weights]


def setting_config(config: ml_collections.ConfigDict, w: float, grad_through: str):
    """The run_ltg config of one setting: only w and grad_through differ between settings."""
    ltg = copy.deepcopy(config.ltg)
    ltg.sampler.guidance.w = w
    ltg.sampler.guidance.grad_through = grad_through
    ltg.variant = "unguided" if w == 0 else ltg.variant
    return ltg


def measure(
    data: synthetic.SyntheticData, bundle: predictor.PredictorBundle, oracle, batch_size: int
) -> dict[str, Any]:
    """Mean signals, predictor accuracy and oracle fidelity of one setting's samples."""
    signals = {
        name: float(np.mean([row["signals"][name] for row in data.rows]))
        for name in SIGNALS_REPORTED
    }
    predicted = mining.oracle_probs(bundle, data.images, batch_size).argmax(-1)
    fidelity = mining.oracle_probs(oracle, data.images, batch_size).argmax(-1)
    return {
        **{f"mean_{k}": v for k, v in signals.items()},
        "predictor_accuracy": float(np.mean(predicted == data.labels)),
        "oracle_fidelity": float(np.mean(fidelity == data.labels)),
        "samples": int(len(data.labels)),
        "per_class": per_class(data, predicted == data.labels, fidelity == data.labels),
    }


def per_class(
    data: synthetic.SyntheticData, predictor_correct: np.ndarray, oracle_correct: np.ndarray
) -> dict[str, dict[str, float]]:
    """{class name: predictor accuracy, oracle fidelity} of one setting, in class-id order."""
    names = {int(row["class_id"]): str(row["class_name"]) for row in data.rows}
    return {
        names[c]: {
            "predictor_accuracy": float(np.mean(predictor_correct[data.labels == c])),
            "oracle_fidelity": float(np.mean(oracle_correct[data.labels == c])),
        }
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


def run_study(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Runs (or resumes) every setting, then writes guidance_study.{json,md} and a grid."""
    workdir = Path(workdir)
    bundle = ltg_sampling.load_bundle(config.ltg.predictor)
    oracle = ltg_sampling.load_bundle(config.oracle, "oracle")
    with workdirs.claim(workdir):  # each setting's run_ltg claims its own subfolder
        return _study(config, workdir, bundle, oracle)


def _study(config: ml_collections.ConfigDict, workdir: Path, bundle, oracle) -> dict[str, Any]:
    """run_study's settings and outputs once the workdir is claimed."""
    rows, grid = [], []
    for w, grad_through in settings(config):
        name = setting_name(w, grad_through)
        tic = time.time()
        summary = ltg_sampling.run_ltg(setting_config(config, w, grad_through), workdir / name)
        data = synthetic.load_synthetic(workdir / name / ltg_sampling.DATA_DIR)
        row = {"setting": name, "w": w, "grad_through": "-" if w == 0 else grad_through}
        row.update(measure(data, bundle, oracle, int(config.ltg.batch_size)))
        row["wall_s"] = float(summary.get("wall_time_s", time.time() - tic))
        rows.append(row)
        grid.append(data.images[:: max(1, len(data.images) // int(config.grid_columns))])
    columns = min(len(g) for g in grid)
    io.save_grid(
        workdir / "guidance_study.png", np.concatenate([g[:columns] for g in grid]), columns
    )
    result = {"rows": rows, "signal": str(config.ltg.signal), "config": config.to_dict()}
    io.atomic_write_json(workdir / "guidance_study.json", result)
    overall = [{k: v for k, v in row.items() if k != "per_class"} for row in rows]
    table = metrics.print_table(overall, title="Longtail Guidance vs unguided (same seeds)")
    by_class = "\n\n".join(
        f"{title}\n```\n{per_class_table(rows, metric)}\n```"
        for metric, title in (
            ("predictor_accuracy", "Predictor accuracy per class"),
            ("oracle_fidelity", "Oracle class fidelity per class"),
        )
    )
    io.atomic_write_text(
        workdir / "guidance_study.md",
        f"# Guidance study\n\nsignal: `{config.ltg.signal}`, "
        f"{rows[0]['samples']} samples per setting; rows of guidance_study.png follow the "
        f"table's order.\n\n```\n{table}\n```\n\n{by_class}\n",
    )
    return result
