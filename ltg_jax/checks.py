"""Input and numeric checks shared by every job: a bad number stops a job with one clear line.

NaN or inf in a config, in loaded weights, in a sampled batch, a loss or a gradient would
otherwise give black images or a NaN model with exit status 0. Each check names where the
bad value is and what to do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np

T = TypeVar("T")


class NonFiniteError(ValueError):
    """NaN or inf where a finite number is required (a config value, weights, a batch, a loss)."""


def _leaves(value: Any, prefix: str):
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        for key, sub in value.items():
            yield from _leaves(sub, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for i, sub in enumerate(value):
            yield from _leaves(sub, f"{prefix}[{i}]")
    else:
        yield prefix, value


def check_config_finite(config: ml_collections.ConfigDict | Mapping, prefix: str = "--config"):
    """Raises NonFiniteError naming every float config value that is NaN or inf."""
    bad = [
        f"{key}={value}"
        for key, value in _leaves(config, prefix)
        if isinstance(value, float) and not math.isfinite(value)
    ]
    if bad:
        raise NonFiniteError(f"{', '.join(bad)}: use a finite number")


def non_finite_names(tree: Any) -> list[str]:
    """Paths ('a/b/kernel') of the leaves of a pytree of arrays that hold NaN or inf."""
    names = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.asarray(leaf)
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            names.append("/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path))
    return names


def require_finite(tree: Any, what: str, fix: str) -> None:
    """Raises NonFiniteError if any array of `tree` holds NaN or inf, naming the leaves."""
    names = non_finite_names(tree)
    if names:
        shown = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
        raise NonFiniteError(f"{what} hold NaN or inf ({shown}); {fix}")


def require_finite_step(step: int, scalars: Mapping[str, Any], where: str, fix: str) -> None:
    """Stops training at the first step whose loss or gradient norm is not finite.

    Called before the step's state is saved, so every checkpoint on disk is finite.
    """
    bad = {k: float(v) for k, v in scalars.items() if not math.isfinite(float(v))}
    if bad:
        words = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteError(
            f"{where}: {words} at step {step}; stopped before saving that step (earlier "
            f"checkpoints are kept). {fix}"
        )


def found_key_parts(config: ml_collections.ConfigDict, parts: list[str]) -> tuple[int, Any]:
    """How many leading `parts` of a dotted key `config` has, and the node the last one names
    (`config` itself for none): the key exists when the count is len(parts)."""
    node = config
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return depth, node
        node = node[part]
    return len(parts), node


def config_ints(value: Any, field: str, hint: str = "") -> tuple[int, ...]:
    """Integers of a list config field ('0,3', (0, 3), 3); an error names --config.<field>."""
    return _config_numbers(value, field, int, "0,3", hint)


def config_floats(value: Any, field: str) -> tuple[float, ...]:
    """Numbers of a list config field ('0.5,1,2', (0.5, 1), 2); an error names the field."""
    return _config_numbers(value, field, float, "0.5,1,2", "")


def _config_numbers(
    value: Any, field: str, convert: Callable[[str], T], example: str, hint: str
) -> tuple[T, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else (value,)
    parts = [p.strip() for v in items for p in str(v).split(",") if p.strip()]
    try:
        return tuple(convert(p) for p in parts)
    except ValueError:
        kind = "integers" if convert is int else "numbers"
        raise ValueError(
            f"--config.{field}={','.join(parts)}: expected {kind}, e.g. "
            f"--config.{field}={example}{hint}"
        ) from None


def built(build: Callable[[], T], field: str = "model") -> T:
    """`build()` (a model's construction and init); its failure is one line naming the field."""
    try:
        return build()
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise ValueError(
            f"--config.{field}: the model cannot be built from it ({type(e).__name__}: "
            f"{first}); fix those fields"
        ) from e
