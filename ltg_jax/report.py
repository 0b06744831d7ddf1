"""The mining loop's report: numbers over seeds, plots, report.md and the headline table."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ltg_jax import metrics

GROUP_KEYS = ("many", "medium", "few", "overall")


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """{'mean', 'std', 'n'} of values over seeds (std with ddof=0; 0 for one seed)."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def aggregate_arm(seed_reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy reports of one arm's seeds -> {group: mean/std, 'per_class': {name: mean/std}}."""
    out: dict[str, Any] = {g: mean_std([r[g] for r in seed_reports]) for g in GROUP_KEYS}
    names = list(seed_reports[0]["per_class"])
    out["per_class"] = {n: mean_std([r["per_class"][n] for r in seed_reports]) for n in names}
    out["per_seed"] = [{g: r[g] for g in GROUP_KEYS} for r in seed_reports]
    if all("confused_with" in r for r in seed_reports):  # runs evaluated before it lack it
        out["confused_with"] = mean_confusions([r["confused_with"] for r in seed_reports])
    return out


def mean_confusions(
    reports: Sequence[Mapping[str, Mapping[str, float]]], top: int = 2
) -> dict[str, dict[str, float]]:
    """Per class, the `top` wrong classes by their share averaged over runs (a class that
    was not among a run's top confusions counts 0 there)."""
    out = {}
    for name in reports[0]:
        shares: dict[str, float] = {}
        for r in reports:
            for other, share in r[name].items():
                shares[other] = shares.get(other, 0.0) + share / len(reports)
        out[name] = dict(sorted(shares.items(), key=lambda kv: -kv[1])[:top])
    return out


def aggregate_generations(
    by_generation: Mapping[Any, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """aggregate_arm over every (generation seed, fine-tuning seed) run of an arm, plus
    'per_generation' (each generation's mean per group) and 'generation_std' (the std of
    those means: the spread that generation noise alone adds). A `real` arm has one
    generation (key None) and neither field."""
    runs = [r for reports in by_generation.values() for r in reports]
    out = aggregate_arm(runs)
    if list(by_generation) != [None]:
        means = {g: {k: mean_std([r[k] for r in reports])["mean"] for k in GROUP_KEYS}
                 for g, reports in by_generation.items()}  # fmt: skip
        out["per_generation"] = {str(g): m for g, m in means.items()}
        out["generation_std"] = {
            k: mean_std([m[k] for m in means.values()])["std"] for k in GROUP_KEYS
        }
    return out


def headline_rows(arms: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per arm: many/medium/few/overall as 'mean ± std'."""
    return [
        {"arm": arm, **{g: f"{a[g]['mean']:.4f} ± {a[g]['std']:.4f}" for g in GROUP_KEYS}}
        for arm, a in arms.items()
    ]


def headline_table(arms: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """The 3 arms x many/medium/few/overall table (test accuracy, mean ± std over seeds)."""
    return (
        metrics.format_table(headline_rows(arms))
        if not title
        else (f"{title}\n{metrics.format_table(headline_rows(arms))}")
    )


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    return plt


def plot_group_bars(path: str | os.PathLike, arms: Mapping[str, Mapping[str, Any]]) -> Path:
    """Bar chart: many/medium/few/overall accuracy per arm, error bars = std over seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(1, len(arms))
    x = np.arange(len(GROUP_KEYS))
    for i, (arm, a) in enumerate(arms.items()):
        means = [a[g]["mean"] for g in GROUP_KEYS]
        stds = [a[g]["std"] for g in GROUP_KEYS]
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=arm)
        for g_i, g in enumerate(GROUP_KEYS):  # the seeds themselves, so the spread is visible
            seeds = [s[g] for s in a["per_seed"]]
            ax.scatter(
                np.full(len(seeds), x[g_i] + (i - (len(arms) - 1) / 2) * width),
                seeds,
                s=6,
                c="k",
                zorder=3,
            )
    ax.set_xticks(x, GROUP_KEYS)
    ax.set_ylabel("test accuracy")
    lo = min(a[g]["mean"] - a[g]["std"] for a in arms.values() for g in GROUP_KEYS)
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.legend(fontsize=8)
    ax.set_title("accuracy by frequency group (bars: mean, whiskers: std, dots: seeds)")
    return save_figure(fig, path)


def plot_per_class(
    path: str | os.PathLike, arms: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]
) -> Path:
    """Per-class test accuracy of each arm (mean ± std over seeds)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / max(1, len(arms))
    x = np.arange(len(class_names))
    for i, (arm, a) in enumerate(arms.items()):
        means = [a["per_class"][n]["mean"] for n in class_names]
        stds = [a["per_class"][n]["std"] for n in class_names]
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=arm)
    ax.set_xticks(x, class_names, rotation=30, fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("per-class accuracy (classes in order of training frequency)")
    return save_figure(fig, path)


def plot_fidelity(path: str | os.PathLike, fidelity: Mapping[str, Mapping[str, Any]]) -> Path:
    """Oracle label fidelity of each arm's synthetic data: overall and per class."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    arms = list(fidelity)
    names = list(next(iter(fidelity.values()))["per_class"]) if arms else []
    width = 0.8 / max(1, len(arms))
    x = np.arange(len(names) + 1)
    for i, arm in enumerate(arms):
        values = [fidelity[arm]["per_class"][n] for n in names] + [fidelity[arm]["overall"]]
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, values, width, label=arm)
    ax.set_xticks(x, [*names, "overall"], rotation=30, fontsize=8)
    ax.set_ylabel("oracle agrees with class")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("label fidelity of the generated data (before filtering)")
    return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


STAGE_ORDER = ("generate", "review", "load_data", "finetune", "evaluate_shipped", "report")


def stage_order(stage: str) -> tuple[int, str]:
    """Sort key: the loop's order of stages, then by name."""
    head = stage.split("/", 1)[0]
    return (STAGE_ORDER.index(head) if head in STAGE_ORDER else len(STAGE_ORDER), stage)


def _fmt(a: Mapping[str, float]) -> str:
    return f"{a['mean']:.4f} ± {a['std']:.4f}"


def per_generation(gain: Mapping[str, Any] | None) -> str:
    """'; per generation seed: +1.8, +0.2, +1.5' (points), or '' with one generation."""
    gains = (gain or {}).get("per_generation") or {}
    if len(gains) < 2:
        return ""
    return "; per generation seed: " + ", ".join(f"{100 * v:+.1f}" for v in gains.values())


def kpi_lines(kpis: Mapping[str, Any]) -> list[str]:
    """The report's first lines: gains, data and cost, in words a manager reads."""

    def gain(name: str, label: str) -> str:
        g = kpis.get(name)
        return (
            f"{label}: n/a"
            if g is None
            else (
                f"{label}: **{100 * g['gain']:+.1f} points** (± {100 * g['std']:.1f}, sum of stds)"
            )
        )

    worst = ", ".join(
        f"{arm} {w['class']} {w['accuracy']:.3f}" for arm, w in kpis["worst_class"].items()
    )
    rate = kpis.get("generation_images_per_s")
    return [
        "- "
        + gain("few_shot_gain_vs_unguided", "Few-shot accuracy, LTG vs unguided data")
        + per_generation(kpis.get("few_shot_gain_vs_unguided")),
        "- " + gain("few_shot_gain_vs_real", "Few-shot accuracy, LTG vs real data only"),
        *(
            [
                "- "
                + gain(
                    "few_shot_gain_vs_best_baseline",
                    f"Few-shot accuracy, LTG vs the best baseline "
                    f"({kpis['few_shot_gain_vs_best_baseline']['baseline']})",
                )
            ]
            if kpis.get("few_shot_gain_vs_best_baseline")
            else []
        ),
        *mode_kpi_lines(kpis),
        f"- Worst class per arm (accuracy): {worst}",
        f"- Images: {kpis['generated']} generated, {kpis['reviewed']} reviewed by a person, "
        f"{kpis['used_for_training']} used for fine-tuning",
        f"- Cost: {kpis['wall_time_s']:.0f} s of stage wall time"
        + (f"; generation {rate:.2f} images/s" if rate else ""),
    ]


def mode_kpi_lines(kpis: Mapping[str, Any]) -> list[str]:
    """The shifted-set gains and the rare mode's rate (when the run had them)."""
    lines = []
    for shift, g in (kpis.get("shift_gain_vs_unguided") or {}).items():
        word = "beyond" if abs(g["gain"]) > 2 * g["std"] else "within"
        lines.append(
            f"- Accuracy on test+{shift}, LTG vs unguided data: **{100 * g['gain']:+.1f} "
            f"points** (± {100 * g['std']:.1f}, sum of stds; {word} twice the spread)"
        )
    rate = kpis.get("rare_mode_rate")
    if rate:
        lines.append(
            f"- Rare mode ({rate['mode']}) among generated images: LTG {rate['ltg']:.3f}, "
            f"unguided {rate['unguided']:.3f} (**{rate['ratio']:.2f}x**); label fidelity LTG "
            f"{rate['ltg_label_fidelity']:.3f}"
        )
    return lines


def shifted_lines(report: Mapping[str, Any]) -> list[str]:
    """Overall accuracy per arm on the clean and each shifted copy of the eval split."""
    shifted = report.get("shifted") or {}
    if not shifted:
        return []
    names = list(shifted)
    lines = ["", "## Shifted test sets (overall accuracy, mean ± std)", "",
             "Each shift is a fixed corruption of the eval split (ltg_jax/data/shifts.py).", "",
             "| arm | clean | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]  # fmt: skip
    for arm, a in report["arms"].items():
        cells = [_fmt(shifted[n]["arms"][arm]["overall"]) for n in names]
        lines.append(f"| {arm} | {_fmt(a['overall'])} | " + " | ".join(cells) + " |")
    base = [f"{shifted[n]['base']['overall']:.4f}" for n in names]
    lines.append(
        f"| (shipped predictor) | {report['base']['overall']:.4f} | " + " | ".join(base) + " |"
    )
    return lines


def mode_lines(report: Mapping[str, Any]) -> list[str]:
    """The rare mode's share per generated set and the clusters' isolation of it."""
    modes = report.get("modes") or {}
    if not modes:
        return []
    rare = modes["rare_mode"]
    lines = ["", f"## The rare mode ({rare}) in the generated data (mode oracle)", "",
             "| generated set | share generated | share kept | label fidelity |",
             "|---|---|---|---|"]  # fmt: skip
    for name, r in modes["rare_rate"].items():
        fid = report["synthetic"][name]["label_fidelity"]["overall"]
        kept = "n/a" if r["kept"] is None else f"{r['kept']:.3f}"
        lines.append(f"| {name} | {r['generated']:.3f} | {kept} | {fid:.3f} |")
    if modes.get("unscored_classes"):
        left_out = ", ".join(modes["unscored_classes"])
        lines += ["", f"The shares leave out {left_out} (the mode oracle cannot tell its "
                  "modes apart); the table below still shows it."]  # fmt: skip
    per_class = modes.get("rare_rate_per_class") or {}
    if per_class:
        sets = list(per_class)
        classes = list(next(iter(per_class.values())))
        header = "| class | " + " | ".join(sets) + " |"
        lines += ["", "Share of the rare mode per class:", "", header,
                  "|---" * (len(sets) + 1) + "|"]  # fmt: skip
        for c in classes:
            cells = ["n/a" if per_class[n][c] is None else f"{per_class[n][c]:.2f}" for n in sets]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    iso = modes.get("isolation")
    if iso:
        lines += ["", "Introspection against the planted mode: per class, the cluster of the "
                  "hardest LTG samples richest in it (precision: its share there; recall: the "
                  "cluster's part of the class's hardest samples in that mode; base rate: its "
                  "share of the class's hardest samples).", "",
                  "| class | cluster | size | precision | recall | base rate |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in iso["per_class"]:
            recall = "n/a" if r["recall"] is None else f"{r['recall']:.2f}"
            lines.append(f"| {r['class_name']} | {r['cluster']} | {r['size']} | "
                         f"{r['precision']:.2f} | {recall} | {r['base_rate']:.2f} |")  # fmt: skip
        means = {k: iso[f"mean_{k}"] for k in ("precision", "recall", "base_rate")}
        lines.append("| **mean** | | | " + " | ".join(
            "n/a" if v is None else f"{v:.2f}" for v in means.values()) + " |")  # fmt: skip
    return lines


def diagnostic_lines(report: Mapping[str, Any]) -> list[str]:
    """Per class: accuracy of real / unguided / LTG, and the synthetic data behind them."""
    rows = report.get("per_class_diagnostics") or []
    if not rows or "ltg_minus_unguided" not in rows[0]:
        return []
    cell = lambda v, f: "n/a" if v is None else format(v, f)
    confused = "confused_with_ltg" in rows[0] and "confused_with_unguided" in rows[0]
    lines = ["", "## Per class: where LTG data helps and hurts", "",
             "Accuracy: means over runs. Fidelity and kept: LTG / unguided, means over "
             "generation seeds. Ink: the kept samples' mean brightness over the real images' "
             "(below 1: fainter)."
             + (" Errors go to: the class's most frequent wrong prediction and its share of "
                "the class's test images, LTG / unguided." if confused else ""), "",
             "| class | group | real | unguided | ltg | ltg - unguided | fidelity | kept | ink |"
             + (" errors go to |" if confused else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if confused else "")]  # fmt: skip
    for r in rows:
        real = cell(r.get("accuracy_real"), ".3f")
        lines.append(
            f"| {r['class']} | {r['group']} | {real} | "
            f"{r['accuracy_unguided']:.3f} | {r['accuracy_ltg']:.3f} | "
            f"{r['ltg_minus_unguided']:+.3f} | {cell(r.get('fidelity_ltg'), '.2f')} / "
            f"{cell(r.get('fidelity_unguided'), '.2f')} | {r.get('kept_ltg', 0):.0f} / "
            f"{r.get('kept_unguided', 0):.0f} | {cell(r.get('relative_ink_ltg'), '.2f')} / "
            f"{cell(r.get('relative_ink_unguided'), '.2f')} |"
            + (f" {top_confusion(r['confused_with_ltg'])} / "
               f"{top_confusion(r['confused_with_unguided'])} |" if confused else "")
        )  # fmt: skip
    return lines


def top_confusion(confused_with: Mapping[str, float]) -> str:
    """'Sneaker 0.031': the most frequent wrong class and its share ('none' without errors)."""
    if not confused_with:
        return "none"
    other, share = max(confused_with.items(), key=lambda kv: kv[1])
    return f"{other} {share:.3f}"


def generation_lines(arms: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each synthetic arm's mean per generation seed, and the std generation noise adds."""
    spread = {arm: a for arm, a in arms.items() if "per_generation" in a}
    if not spread or len(next(iter(spread.values()))["per_generation"]) < 2:
        return []
    lines = ["", "Per generation seed (mean over fine-tuning seeds), and the std of those "
             "means:", "", "| arm | generation | many | medium | few | overall |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for arm, a in spread.items():
        for g, m in a["per_generation"].items():
            lines.append(f"| {arm} | {g} | " + " | ".join(f"{m[k]:.4f}" for k in GROUP_KEYS) + " |")
        std = a["generation_std"]
        lines.append(f"| {arm} | std | " + " | ".join(f"{std[k]:.4f}" for k in GROUP_KEYS) + " |")
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    """report.md from report.json's content."""
    arms = report["arms"]
    lines = [
        "# Generative data mining: report",
        "",
        *(kpi_lines(report["kpis"]) if report.get("kpis") else []),
        "",
        f"Config variant `{report['variant']}`; fine-tuning seeds {report['seeds']}, "
        f"generation seeds {report.get('generation_seeds', [0])}; wall time of this "
        f"invocation {report['wall_time_s']:.1f} s.",
        "",
        "## Test accuracy (mean ± std over seeds)",
        "",
        "Synthetic arms: over every (generation seed, fine-tuning seed) pair; `real`: over the "
        "fine-tuning seeds (it uses no generated data).",
        "",
        "| arm | many | medium | few | overall |",
        "|---|---|---|---|---|",
    ]
    for arm, a in arms.items():
        lines.append(f"| {arm} | " + " | ".join(_fmt(a[g]) for g in GROUP_KEYS) + " |")
    if report.get("base"):
        b = report["base"]
        lines.append(
            "| (shipped predictor, no fine-tuning) | "
            + " | ".join(f"{b[g]:.4f}" for g in GROUP_KEYS)
            + " |"
        )
    lines += generation_lines(arms)
    lines += ["", "![groups](accuracy_groups.png)", "", "![per class](accuracy_per_class.png)"]
    lines += shifted_lines(report)
    lines += diagnostic_lines(report)
    lines += ["", "### Verdict (few-shot)", "", report.get("verdict", ""), ""]
    lines += ["## Synthetic data", "", "| arm | generated | used for training | label fidelity |"]
    lines += ["|---|---|---|---|"]
    for arm, s in report["synthetic"].items():
        lines.append(
            f"| {arm} | {s['generated']} | {s['kept']} | {s['label_fidelity']['overall']:.4f} |"
        )
    lines += ["", "Filtering: " + report.get("filtering_note", "none"), ""]
    for arm, s in report["synthetic"].items():
        sig = ", ".join(f"{k} {v:.4f}" for k, v in sorted(s["mean_signals"].items()))
        lines.append(f"- mean signals of `{arm}` (shipped predictor): {sig}")
    lines += mode_lines(report)
    lines += ["", "![fidelity](label_fidelity.png)", ""]
    if report.get("review_pages"):
        lines += ["## Review", ""]
        lines += [f"- `{arm}`: open [{page}]({page}) in a browser, judge the samples, Export "
                  f"the manifest, then rerun with `--config.review.manifest.{arm}=<manifest>`"
                  for arm, page in report["review_pages"].items()]  # fmt: skip
        lines += [""]
    lines += ["## Hardest LTG samples per class", "", "![hardest](hardest_ltg.png)", ""]
    lines += [
        "Rows: the sampled classes in id order; hardest (highest signal) first. Under each "
        "sample: its index and signal, then the predictor's class and probability (red when "
        "it is not the sample's class).",
        "",
    ]
    lines += ["## Introspection: k-means of the hardest LTG samples (predictor features)", ""]
    lines += [
        "What each cluster's samples share, measured against "
        f"{report.get('cluster_reference', 'reference')} samples of the same class (z = "
        "difference of means in reference standard deviations)"
        + ("; in words, by the VLM." if any("vlm" in c for c in report["clusters"]) else "."),
        "",
        "| class | cluster | size | mean signal | measured | sheet |",
        "|---|---|---|---|---|---|",
    ]
    for c in report["clusters"]:
        said = f" VLM: {c['vlm']}" if c.get("vlm") else ""
        lines.append(
            f"| {c['class_name']} | {c['cluster']} | {c['size']} | {c['mean_score']:.4f} | "
            f"{c.get('description', '')}{said} | [{c['sheet']}]({c['sheet']}) |"
        )
    if report.get("blind_spots"):
        lines += ["", "### Blind spots per class (VLM summary of the clusters)", ""]
        for name, spot in report["blind_spots"].items():
            if isinstance(spot, str):
                lines.append(f"- **{name}**: {spot}")
                continue
            lines.append(f"- **{name}**: {spot['summary']} Prompts for targeted data "
                         "(`python -m sample.ltg --config configs/ltg.py:text "
                         "--config.prompt=...`):")  # fmt: skip
            lines += [f"  - `{p}`" for p in spot["prompts"]]
    if report.get("vlm_error"):
        lines += ["", f"No VLM explanations: {report['vlm_error']}"]
    lines += ["", "## Cost", "", "| stage | wall time (s) |", "|---|---|"]
    stages = report["stage_wall_time_s"]
    for stage in sorted(stages, key=stage_order):
        lines.append(f"| {stage} | {stages[stage]:.1f} |")
    lines.append(f"| **sum of stages** | {sum(stages.values()):.1f} |")
    lines += [
        "",
        f"Images generated: {report['images_generated']}. Each stage's time is that of the "
        "invocation that ran it (a resumed run reads finished stages instead).",
        "",
    ]
    if report.get("guidance_choice"):
        lines += ["## Guidance setting", "", report["guidance_choice"], ""]
    return "\n".join(lines)
