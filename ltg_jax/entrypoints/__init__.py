"""Console scripts: `ltg-sample`, `ltg-grid`, `ltg-mine`, `ltg-review`, `ltg-train KIND`,
`ltg-fidelity`, `ltg-budget-curve`, `ltg-mode-supply`.

The scripts run the repo's thin entrypoints (sample/*.py, train/*.py), which the package
ships as `ltg_jax.entrypoints.sample` and `ltg_jax.entrypoints.train`; configs ship as
`ltg_jax.configs` and are named by file (`--config ltg:epistemic`).
"""

from __future__ import annotations

import importlib
import sys

TRAINERS = ("predictor", "epistemic_head", "eval_signals", "vae", "ldm", "tiny_decoder")


def _run(module_name: str, argv: list[str]) -> None:
    from ltg_jax import cli

    module = importlib.import_module(module_name)  # defines its absl flags
    cli.run(module.main, argv)


def sample() -> None:
    """ltg-sample: Longtail Guidance sampling into a synthetic dataset (sample/ltg.py)."""
    _run("ltg_jax.entrypoints.sample.ltg", sys.argv)


def grid() -> None:
    """ltg-grid: unguided sample grids (sample/grid.py)."""
    _run("ltg_jax.entrypoints.sample.grid", sys.argv)


def mine() -> None:
    """ltg-mine: the generative data mining loop (sample/mine.py)."""
    _run("ltg_jax.entrypoints.sample.mine", sys.argv)


def review() -> None:
    """ltg-review: the review page and exports of a synthetic dataset (sample/review.py)."""
    _run("ltg_jax.entrypoints.sample.review", sys.argv)


def fidelity() -> None:
    """ltg-fidelity: oracle class fidelity of a class-conditional model (sample/fidelity.py)."""
    _run("ltg_jax.entrypoints.sample.fidelity", sys.argv)


def budget_curve() -> None:
    """ltg-budget-curve: accuracy vs synthetic budget, LTG vs unguided (sample/budget_curve.py)."""
    _run("ltg_jax.entrypoints.sample.budget_curve", sys.argv)


def mode_supply() -> None:
    """ltg-mode-supply: rare-mode accuracy vs true rotated images (sample/mode_supply.py)."""
    _run("ltg_jax.entrypoints.sample.mode_supply", sys.argv)


def train() -> None:
    """ltg-train KIND ...: one of the trainers in train/ (predictor, vae, ldm, ...)."""
    if len(sys.argv) < 2 or sys.argv[1] not in TRAINERS:
        sys.exit(f"usage: ltg-train {{{','.join(TRAINERS)}}} --config NAME[:variant] --workdir DIR")
    kind = sys.argv[1]
    _run(f"ltg_jax.entrypoints.train.{kind}", [f"ltg-train {kind}", *sys.argv[2:]])
