"""What fine-tuning can gain from rare-mode images: the ceiling of a perfect generator.

On the ground-truth benchmark (ltg_jax/data/world.py) the question behind the worst-group goal
is how many images of the rare mode, of the right class and of perfect quality, the
fine-tuning needs before the rare-mode group moves beyond its spread. This answers it without
any generator: each synthetic set is drawn from the world split (the generative model's own
data, i.e. what a perfect generator would draw), set upright, and then exactly `share` of each
class's images are laid on their side. The sets go through the mining loop's fine-tuning and
evaluation unchanged (same real data, mix, steps and seeds), for every share, every draw
(`config.generation_seeds`: a new draw of the set) and every fine-tuning seed.

Set next to a mining report of the same config (`config.supply.compare_report`), the curve
says what an LTG set's rotated samples are worth: the accuracy of LTG's generated sets against
the accuracy the same number of true rotated images gives.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ltg_jax import checks, io, ltg_sampling, mining, parallel, report, run_record, workdirs
from ltg_jax.data import datasets, fashion_mnist, pipeline, shifts, world

SUPPLY_JSON = "supply.json"
SUPPLY_MD = "supply.md"
SUPPLY_PNG = "supply.png"
REAL = "real"  # the row fine-tuned on real data alone


def upright_world(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, H, W], labels [N]) of the world split, every image upright."""
    images = arrays["world_images"].copy()
    rare = arrays["world_modes"] == world.RARE
    images[rare] = world.set_upright(images[rare])
    return images, arrays["world_labels"]


def supply_set(
    images: np.ndarray,
    labels: np.ndarray,
    per_class: Sequence[int],
    rotated_share: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """{'image' f32 [N, 32, 32, 1] in [-1, 1] (padded as the real data), 'label', 'mode'}: per
    class `per_class[k]` distinct upright images of class k, exactly round(share * count) of
    them rotated."""
    rng = np.random.default_rng(seed)
    picks, modes = [], []
    for k, count in enumerate(per_class):
        members = np.flatnonzero(labels == k)
        if count > members.size:
            raise ValueError(
                f"class {k} has {members.size} world images, fewer than the {count} asked for; "
                "lower the budget"
            )
        picks.append(rng.choice(members, count, replace=False))
        modes.append(world.exact_share_mask(count, rotated_share, rng).astype(np.int32))
    index, mode = np.concatenate(picks), np.concatenate(modes)
    chosen = world.plant(images[index], mode)
    return {
        "image": np.stack([pipeline.to_model_image(x[..., None]) for x in chosen]),
        "label": labels[index].astype(np.int32),
        "mode": mode,
    }


def share_name(share: float) -> str:
    """The folder of one rotated share: share_0, share_0.0625, share_1."""
    return f"share_{share:g}"


def check_supply(config: ml_collections.ConfigDict) -> tuple[float, ...]:
    """The rotated shares of config.supply, refused with the fix when the run cannot work."""
    if str(config.data.config) != "world":
        raise ValueError(
            f"--config.data.config={config.data.config!r}: the mode supply needs the "
            "ground-truth benchmark's mode labels; run it on configs/mine.py:world"
        )
    shares = tuple(float(s) for s in checks.config_floats(config.supply.shares, "supply.shares"))
    if not shares or len(set(shares)) != len(shares) or not all(0 <= s <= 1 for s in shares):
        raise ValueError(
            f"--config.supply.shares={config.supply.shares!r}: give distinct shares in [0, 1], "
            "e.g. 0,0.0625,0.25,1"
        )
    if world.RARE_SHIFT not in mining.eval_shifts(config):
        raise ValueError(
            f"--config.eval.shifts={config.eval.shifts!r}: add {world.RARE_SHIFT}, the shift "
            f"that shows the rare-mode group ({rare_split(config)})"
        )
    return shares


def rare_split(config: ml_collections.ConfigDict) -> str:
    """The rare-mode group's split: test+rotate90."""
    return shifts.shifted_name(str(config.eval.split), world.RARE_SHIFT)


def mining_points(out: Mapping[str, Any], split: str) -> dict[str, list[dict[str, float]]]:
    """Per synthetic arm of a mining report: one point per generated set (rotated images kept,
    approximately: the mode oracle's kept share, Bag left out, times the kept count; and
    `split` overall accuracy of that set's fine-tuning)."""
    arms = {
        a: v for s in out["shifted"].values() if s["split"] == split for a, v in s["arms"].items()
    }
    points: dict[str, list[dict[str, float]]] = {}
    for name, kept_share in out["modes"]["rare_rate"].items():
        arm, generation = mining.generation_source(name), name.partition("_gen")[2] or "0"
        if arm not in arms:
            continue
        points.setdefault(arm, []).append({
            "rotated": kept_share["kept"] * out["synthetic"][name]["kept"],
            "images": out["synthetic"][name]["kept"],
            "overall": arms[arm]["per_generation"][generation]["overall"],
        })  # fmt: skip
    return points


def supply_rows(
    results: Mapping[float | str, Mapping[Any, Sequence[Mapping[str, Any]]]],
    sets: Mapping[float, Sequence[Mapping[str, np.ndarray]]],
    splits: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per share (and `real`): images, rotated images and accuracy on each split over
    every (draw, fine-tuning seed), with the draws' own spread (generation_std)."""
    rows = []
    for key, by_draw in results.items():
        row: dict[str, Any] = {"share": key, "images": 0, "rotated": 0}
        if key != REAL:
            row["images"] = int(np.mean([s["label"].size for s in sets[key]]))
            row["rotated"] = int(np.mean([s["mode"].sum() for s in sets[key]]))
        for split in splits:
            agg = report.aggregate_generations(
                {d: [r[split] for r in runs] for d, runs in by_draw.items()}
            )
            row[split] = {
                "overall": agg["overall"],
                "few": agg["few"],
                "per_generation": {
                    d: m["overall"] for d, m in agg.get("per_generation", {}).items()
                },
                "generation_std": agg.get("generation_std", {}).get("overall", 0.0),
            }
        rows.append(row)
    return rows


def plot_supply(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    split: str,
    compare: Mapping[str, Sequence[Mapping[str, float]]],
) -> Path:
    """Rare-mode accuracy against rotated images in the fine-tuning set: the perfect
    generator's sets (mean ± std over runs), real data alone, and each compared arm's sets."""
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    sets = [r for r in rows if r["share"] != REAL]
    ax.errorbar([r["rotated"] for r in sets], [r[split]["overall"]["mean"] for r in sets],
                yerr=[r[split]["overall"]["std"] for r in sets], marker="o", capsize=3,
                label="true images (perfect generator)")  # fmt: skip
    for r in rows:
        if r["share"] == REAL:
            ax.axhline(r[split]["overall"]["mean"], color="gray", linestyle="--", label="real only")
    for arm, points in compare.items():
        ax.scatter([p["rotated"] for p in points], [p["overall"] for p in points], marker="x",
                   s=60, label=f"{arm} (one generated set each)")  # fmt: skip
    ax.set_xscale("symlog", linthresh=8)
    ax.set_xlabel("rotated images in the synthetic fine-tuning set")
    ax.set_ylabel(f"{split} overall accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return report.save_figure(fig, path)


def supply_markdown(summary: Mapping[str, Any]) -> str:
    """supply.md: the rows, and each share's gain over share 0 against twice the spread."""
    split, clean = summary["rare_split"], summary["split"]
    lines = [
        f"# Mode supply: {split} accuracy vs rotated images of perfect quality",
        "",
        "![supply](supply.png)",
        "",
        f"| set | images | rotated | {split} overall | of which draw std | {clean} overall |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        name = REAL if r["share"] == REAL else f"share {r['share']:g}"
        rare, upright = r[split]["overall"], r[clean]["overall"]
        lines.append(
            f"| {name} | {r['images']} | {r['rotated']} | {rare['mean']:.4f} ± {rare['std']:.4f} "
            f"| {r[split]['generation_std']:.4f} | {upright['mean']:.4f} ± {upright['std']:.4f} |"
        )
    for g in summary["gains"]:
        lines.append(
            f"\nShare {g['share']:g} − share {g['base']:g}: {100 * g['gain']:+.1f} points on "
            f"{split}, spread (sum of stds) {100 * g['spread']:.1f}: "
            + ("beyond twice the spread." if g["beyond_twice_spread"] else "not beyond twice it.")
        )
    for arm, points in summary["compare"].items():
        shown = ", ".join(f"{p['rotated']:.0f} rotated -> {p['overall']:.4f}" for p in points)
        lines.append(f"\n{arm} (compared report, one point per generated set): {shown}.")
    return "\n".join(lines) + "\n"


def share_gains(rows: Sequence[Mapping[str, Any]], split: str) -> list[dict[str, Any]]:
    """Each share's gain over the smallest share on `split`, with the goal's test."""
    sets = sorted((r for r in rows if r["share"] != REAL), key=lambda r: r["share"])
    base = sets[0][split]["overall"] if sets else None
    out = []
    for r in sets[1:]:
        acc = r[split]["overall"]
        spread = acc["std"] + base["std"]
        gain = acc["mean"] - base["mean"]
        out.append({"share": r["share"], "base": sets[0]["share"], "gain": gain,
                    "spread": spread, "beyond_twice_spread": bool(gain > 2 * spread)})  # fmt: skip
    return out


def run_mode_supply(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Fine-tunes on every (share, draw, seed) and on real data alone (resumable run by run),
    then writes supply.json, supply.md and supply.png in `workdir`."""
    workdir = Path(workdir)
    shares = check_supply(config)
    draws = mining.generation_list(config)
    compare = {}
    if str(config.supply.compare_report):
        compare = mining_points(io.read_json(config.supply.compare_report), rare_split(config))
    data = datasets.describe(config.data)
    bundle = ltg_sampling.load_bundle(config.predictor)
    inputs = mining.Inputs(bundle, bundle, data.class_names, {}, data)
    record = run_record.make(
        config, predictor_hash=ltg_sampling.predictor_hash(config.predictor, bundle)
    )
    images, labels = upright_world(world.build_world_arrays(fashion_mnist.load_shipped()))
    per_class = mining.class_budget(config, data)
    sets = {s: [supply_set(images, labels, per_class, s, d) for d in draws] for s in shares}
    with workdirs.claim(workdir):
        mining.check_workdir(workdir, record)
        stages = mining.Stages(workdir)
        real = mining.load_real(config, "train")
        split = str(config.eval.split)
        eval_arrays = mining.load_eval_splits(config, split)
        train_config = mining.arm_finetune_config(config, REAL)
        results: dict[float | str, dict[Any, list]] = {
            REAL: {None: mining.finetune_arm(config, workdir, REAL, inputs, real,
                                             mining.empty_arrays(real), eval_arrays, stages)}
        }  # fmt: skip
        for share in shares:
            results[share] = {
                d: mining.finetune_arm(
                    config,
                    workdir,
                    f"{share_name(share)}/draw_{d}",
                    inputs,
                    real,
                    {"image": s["image"], "label": s["label"]},
                    eval_arrays,
                    stages,
                    train_config,
                )
                for d, s in zip(draws, sets[share], strict=True)
            }
        rows = supply_rows(results, sets, [split, rare_split(config)])
        summary = {
            "split": split,
            "rare_split": rare_split(config),
            "per_class": list(per_class),
            "draws": draws,
            "seeds": [int(s) for s in config.seeds],
            "rows": rows,
            "gains": share_gains(rows, rare_split(config)),
            "compare": compare,
        }
        if parallel.is_process_zero():
            plot_supply(workdir / SUPPLY_PNG, rows, rare_split(config), compare)
            io.atomic_write_json(workdir / SUPPLY_JSON, summary)
            io.atomic_write_text(workdir / SUPPLY_MD, supply_markdown(summary))
        parallel.sync("supply_reported")
    return summary
