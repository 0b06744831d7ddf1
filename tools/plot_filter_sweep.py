"""Puts mining reports of one run under several review filters side by side, for docs/world.md.

python tools/plot_filter_sweep.py docs/world/val4x validation+rotate90 \
    0.05=runs/world_val4x/report_p005.json 0.1=... 1=...

Each report is the same workdir rerun with --config.review.max_predictor_prob=P (only the
fine-tunes rerun), copied aside after each run. Writes, in the output folder:
  filter_sweep.png  accuracy on the split against the synthetic images kept per generated
                    set, one point per P (error bars: std over generation x fine-tuning seeds)
  filter_sweep.md   the same as a table, with the per-generation-seed means
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ltg_jax import budget_curve, io

GROUP = "overall"


def evaluated_splits(out: dict) -> list[str]:
    """The splits a mining report has accuracies for: its eval split and its shifted ones."""
    return [out["split"], *(s["split"] for s in out["shifted"].values())]


def sweep_markdown(reports: dict[float, dict], split: str, real: dict[str, float]) -> str:
    """One row per P: each synthetic arm's accuracy, per generation seed and kept images."""
    lines = [
        f"# {split} {GROUP} accuracy under the review filter max_predictor_prob = P",
        "",
        "![sweep](filter_sweep.png)",
        "",
        "| P | arm | images kept | mean ± std | per generation seed |",
        "|---|---|---|---|---|",
    ]
    for p, out in sorted(reports.items()):
        for arm in ("unguided", "ltg"):
            acc = budget_curve.split_arms(out, split)[arm]
            per_gen = ", ".join(f"{g[GROUP]:.3f}" for g in acc["per_generation"].values())
            kept = budget_curve.kept_per_generation(out, arm)
            lines.append(
                f"| {p:g} | {arm} | {kept:.0f} | {acc[GROUP]['mean']:.4f} ± "
                f"{acc[GROUP]['std']:.4f} | {per_gen} |"
            )
    lines.append(f"\nReal data only: {real['mean']:.4f} ± {real['std']:.4f}.")
    return "\n".join(lines) + "\n"


def main(out_dir: str, split: str, labelled: list[str]) -> None:
    reports = {}
    for item in labelled:
        p, _, path = item.partition("=")
        out = json.loads(Path(path).read_text())
        if split not in evaluated_splits(out):
            sys.exit(f"{path} has no {split} accuracies; it has {evaluated_splits(out)}")
        reports[float(p)] = out
    points = budget_curve.curve_points(reports, split, GROUP)
    real = budget_curve.split_arms(next(iter(reports.values())), split)["real"][GROUP]
    folder = Path(out_dir)
    budget_curve.plot_curve(folder / "filter_sweep.png", points, real, f"{split} {GROUP}")
    io.atomic_write_text(folder / "filter_sweep.md", sweep_markdown(reports, split, real))
    print(f"wrote {folder / 'filter_sweep.png'} and {folder / 'filter_sweep.md'}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
