"""Data efficiency: accuracy against the synthetic budget, LTG vs unguided.

The paper claims LTG needs significantly less synthetic data than unguided generation. This
runs the mining loop once per budget scale (each class's synthetic count times the scale),
each in its own resumable workdir `x<scale>`, and plots the chosen accuracy against the
synthetic images each arm trained on. `real` (no synthetic data) is fine-tuned once, in the
1x run, and drawn as a line. To reuse a finished main run as the 1x point, link it:
`ln -s ../world runs/world_curve/x1` (its config must be the curve's).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ltg_jax import checks, io, mining, parallel, report
from ltg_jax.data import shifts

CURVE_JSON = "curve.json"
CURVE_PNG = "curve.png"
CURVE_MD = "curve.md"


def scale_name(scale: float) -> str:
    """The workdir of one budget scale: x0.25, x1, x2."""
    return f"x{scale:g}"


def scaled_config(config: ml_collections.ConfigDict, scale: float) -> ml_collections.ConfigDict:
    """The mining config with every synthetic count times `scale` (rounded, >= 1 where > 0);
    `real` only in the 1x run (it uses no synthetic data, so one run serves every scale)."""
    out = copy.deepcopy(config)
    times = lambda n: max(1, round(int(n) * scale)) if int(n) > 0 else 0
    for group in ("many", "medium", "few"):
        out.budget[group] = times(out.budget[group])
    out.budget.per_class = tuple(times(n) for n in out.budget.per_class)
    if scale != 1.0:
        out.arms = tuple(a for a in mining.arm_list(config) if mining.arm_parts(a)[0] != "real")
    return out


def check_curve(config: ml_collections.ConfigDict) -> tuple[tuple[float, ...], str, str]:
    """(scales, split, group) of config.curve, refused with the fix when they cannot work."""
    scales = tuple(
        sorted({float(s) for s in checks.config_floats(config.curve.scales, "curve.scales")})
    )
    if not scales or min(scales) <= 0 or 1.0 not in scales:
        raise ValueError(
            f"--config.curve.scales={config.curve.scales!r}: give positive scales including 1 "
            "(the main run's budget), e.g. 0.25,0.5,1,2"
        )
    split = str(config.curve.split) or str(config.eval.split)
    allowed = [str(config.eval.split)] + [
        shifts.shifted_name(str(config.eval.split), s) for s in mining.eval_shifts(config)
    ]
    if split not in allowed:
        raise ValueError(
            f"--config.curve.split={split!r} is not evaluated by this run; use one of {allowed} "
            "(shifted splits come from --config.eval.shifts)"
        )
    group = str(config.curve.group)
    if group not in report.GROUP_KEYS:
        raise ValueError(f"--config.curve.group={group!r}: use one of {list(report.GROUP_KEYS)}")
    return scales, split, group


def split_arms(out: Mapping[str, Any], split: str) -> Mapping[str, Mapping[str, Any]]:
    """A mining report's arms on `split`: the eval split's or a shifted one's."""
    if split == out["split"]:
        return out["arms"]
    return next(s["arms"] for s in out["shifted"].values() if s["split"] == split)


def kept_per_generation(out: Mapping[str, Any], arm: str) -> float:
    """Synthetic images one generated set of `arm` trained on (mean over generation seeds)."""
    kept = [s["kept"] for n, s in out["synthetic"].items() if mining.generation_source(n) == arm]
    return float(np.mean(kept))


def curve_points(
    reports: Mapping[float, Mapping[str, Any]], split: str, group: str
) -> dict[str, list[dict[str, float]]]:
    """Per synthetic arm: one point per scale (images kept, accuracy mean and std)."""
    points: dict[str, list[dict[str, float]]] = {}
    for scale, out in sorted(reports.items()):
        for arm, acc in split_arms(out, split).items():
            if mining.arm_parts(arm)[0] == "real":
                continue
            points.setdefault(arm, []).append({
                "scale": scale,
                "images": kept_per_generation(out, mining.arm_parts(arm)[0]),
                "mean": acc[group]["mean"],
                "std": acc[group]["std"],
            })  # fmt: skip
    return points


def images_to_match(points: Sequence[Mapping[str, float]], target: float) -> float | None:
    """Synthetic images an arm needs to reach `target` accuracy, interpolated linearly
    between its measured points; None when no measured budget reaches it."""
    for lo, hi in zip(points, points[1:], strict=False):
        if lo["mean"] >= target:
            return lo["images"]
        if hi["mean"] >= target:
            t = (target - lo["mean"]) / (hi["mean"] - lo["mean"])
            return lo["images"] + t * (hi["images"] - lo["images"])
    return points[-1]["images"] if points and points[-1]["mean"] >= target else None


def plot_curve(
    path: str | os.PathLike,
    points: Mapping[str, Sequence[Mapping[str, float]]],
    real: Mapping[str, float] | None,
    label: str,
) -> Path:
    """Accuracy vs synthetic images per arm (error bars: std over runs), `real` as a band."""
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for arm, pts in points.items():
        x = [p["images"] for p in pts]
        ax.errorbar(x, [p["mean"] for p in pts], yerr=[p["std"] for p in pts], marker="o",
                    capsize=3, label=arm)  # fmt: skip
    if real is not None:
        ax.axhline(real["mean"], color="gray", linestyle="--", label="real only")
        ax.axhspan(real["mean"] - real["std"], real["mean"] + real["std"], color="gray", alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("synthetic images trained on (per generated set)")
    ax.set_ylabel(label)
    ax.legend()
    ax.grid(alpha=0.3)
    return report.save_figure(fig, path)


def curve_summary(
    reports: Mapping[float, Mapping[str, Any]], split: str, group: str
) -> dict[str, Any]:
    """curve.json's content: the points, the real line and the unguided images worth LTG's."""
    points = curve_points(reports, split, group)
    real_arms = split_arms(reports[1.0], split)
    real = real_arms["real"][group] if "real" in real_arms else None
    out: dict[str, Any] = {"split": split, "group": group, "points": points, "real": real}
    if {"ltg", "unguided"} <= set(points):
        ltg_1x = next(p for p in points["ltg"] if p["scale"] == 1.0)
        match = images_to_match(points["unguided"], ltg_1x["mean"])
        out["unguided_images_to_match_ltg_1x"] = {
            "ltg_images": ltg_1x["images"],
            "ltg_accuracy": ltg_1x["mean"],
            "unguided_images": match,
            "ratio": match / ltg_1x["images"] if match is not None else None,
        }
    return out


def curve_markdown(summary: Mapping[str, Any]) -> str:
    """curve.md: one table row per arm and scale, and the matching budget in words."""
    group = summary["group"]
    lines = [
        f"# Data efficiency: {summary['split']} {group} accuracy vs synthetic budget",
        "",
        "![curve](curve.png)",
        "",
        f"| arm | scale | images kept | {group} (mean ± std) |",
        "|---|---|---|---|",
    ]
    for arm, points in summary["points"].items():
        lines += [
            f"| {arm} | {p['scale']:g}x | {p['images']:.0f} | {p['mean']:.4f} ± {p['std']:.4f} |"
            for p in points
        ]
    if summary["real"] is not None:
        r = summary["real"]
        lines.append(f"\nReal data only: {r['mean']:.4f} ± {r['std']:.4f}.")
    match = summary.get("unguided_images_to_match_ltg_1x")
    if match:
        lines.append(
            f"\nLTG at 1x: {match['ltg_accuracy']:.4f} with {match['ltg_images']:.0f} images; "
            + (
                f"unguided reaches it with {match['unguided_images']:.0f} images "
                f"({match['ratio']:.2f}x LTG's)."
                if match["unguided_images"] is not None
                else "no measured unguided budget reaches it."
            )
        )
    return "\n".join(lines) + "\n"


def run_budget_curve(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Runs (or resumes) the mining loop at every scale of config.curve.scales, then writes
    curve.json, curve.md and curve.png in `workdir`."""
    workdir = Path(workdir)
    scales, split, group = check_curve(config)
    reports = {}
    for scale in scales:
        if parallel.is_process_zero():
            print(f"budget curve: scale {scale:g} -> {workdir / scale_name(scale)}", flush=True)
        reports[scale] = mining.run_mining(
            scaled_config(config, scale), workdir / scale_name(scale)
        )
    summary = curve_summary(reports, split, group)
    if parallel.is_process_zero():
        plot_curve(workdir / CURVE_PNG, summary["points"], summary["real"], f"{split} {group}")
        io.atomic_write_json(workdir / CURVE_JSON, summary)
        io.atomic_write_text(workdir / CURVE_MD, curve_markdown(summary))
    return summary
