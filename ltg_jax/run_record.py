"""One "is this the same run?" check for every resumable job (sampling, mining, training).

A workdir's `config.json` holds the run's record: its config (and, for jobs that read models,
their hashes). A rerun compares its own record with the saved one, key by dotted key; each job
says which keys must match (`keep`) and words its refusal, naming the differences.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from ltg_jax import io


def plain(config: ml_collections.ConfigDict | Mapping) -> dict[str, Any]:
    """The config as plain JSON data (tuples become lists), as config.json stores it."""
    raw = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    return json.loads(json.dumps(io.to_jsonable(raw)))


def make(config: ml_collections.ConfigDict | Mapping, **hashes: str) -> dict[str, Any]:
    """The record of a run that reads models: {'config': plain(config), **their hashes}."""
    return {"config": plain(config), **hashes}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {'a.b.c': leaf}; lists are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    keep: Callable[[str], bool] = lambda key: True,
) -> list[str]:
    """'key: saved -> now' for every dotted key that differs and that `keep` says must match."""
    old, new = flatten(saved), flatten(current)
    return [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if keep(k) and old.get(k) != new.get(k)
    ]
