"""Orbax checkpoint helpers shared by every trainer: save every N steps, restore-latest-or-init.

Layout of a workdir: `checkpoints/<step>/` (orbax), `config.json` (the run's config), and the
metrics files. A workdir belongs to one model shape: resuming it with another model config, or
restoring a checkpoint of another shape, fails with a message naming the workdir and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ltg_jax import io, run_record

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
PyTree = Any


def create_manager(
    workdir: str | os.PathLike, *, save_every: int = 1, max_to_keep: int | None = 2
) -> ocp.CheckpointManager:
    """A CheckpointManager on `workdir/checkpoints` that saves every `save_every` steps."""
    directory = Path(workdir).absolute() / CHECKPOINT_DIR
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every,
        max_to_keep=max_to_keep,
        # Synchronous: our states are small, and a finished save is a resumable save.
        enable_async_checkpointing=False,
    )
    # A declared handler lets a fresh manager read item metadata before any save.
    return ocp.CheckpointManager(
        directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def save(manager: ocp.CheckpointManager, step: int, state: PyTree, *, force: bool = False) -> bool:
    """Saves `state` at `step` if the interval says so (or `force`); True if it saved."""
    saved = manager.save(step, args=ocp.args.StandardSave(state), force=force)
    if saved:
        manager.wait_until_finished()
    return saved


def _path_key(path: tuple) -> str:
    # Orbax stores namedtuples as dicts of their fields and tuples as lists: normalise both.
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _shapes(tree: PyTree) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_key(path): tuple(getattr(leaf, "shape", ())) for path, leaf in leaves}


def _shape_mismatches(saved: PyTree, target: PyTree) -> list[str]:
    saved, target = _shapes(saved), _shapes(target)
    problems = [f"{k}: missing in checkpoint" for k in sorted(set(target) - set(saved))]
    problems += [f"{k}: in checkpoint, not in model" for k in sorted(set(saved) - set(target))]
    problems += [
        f"{k}: checkpoint {saved[k]} vs model {target[k]}"
        for k in sorted(set(saved) & set(target))
        if saved[k] != target[k]
    ]
    return problems


def _mismatch_error(workdir: Path, step: int, problems: Sequence[str]) -> ValueError:
    shown = "; ".join(problems[:5]) + (
        f"; ... ({len(problems)} in all)" if len(problems) > 5 else ""
    )
    return ValueError(
        f"the checkpoint at step {step} in {workdir / CHECKPOINT_DIR} was saved from a model of "
        f"another shape ({shown}). Use a fresh --workdir, or the config that wrote this workdir "
        f"(see {workdir / CONFIG_FILE})."
    )


def restore_or_init(manager: ocp.CheckpointManager, init_state: PyTree) -> tuple[PyTree, int]:
    """(latest saved state, its step) if the manager has one, else (init_state, 0)."""
    step = manager.latest_step()
    if step is None:
        return init_state, 0
    workdir = Path(manager.directory).parent
    problems = _shape_mismatches(manager.item_metadata(step).tree, init_state)
    if problems:
        raise _mismatch_error(workdir, step, problems)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, init_state)
    try:
        state = manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # orbax/tensorstore errors are long: say what it means and the fix
        raise ValueError(
            f"could not restore step {step} from {workdir / CHECKPOINT_DIR}: {e}. Use a fresh "
            "--workdir, or the config that wrote this workdir."
        ) from e
    return state, int(step)


def restore_latest(workdir: str | os.PathLike) -> tuple[PyTree, int]:
    """(the latest checkpoint of `workdir` as saved, as numpy-backed arrays, its step)."""
    workdir = Path(workdir).absolute()
    if not (workdir / CHECKPOINT_DIR).is_dir():
        raise FileNotFoundError(
            f"{workdir} has no {CHECKPOINT_DIR}/ folder; train it first (e.g. `python -m "
            f"train.predictor --workdir {workdir}`) or point to the workdir that has one."
        )
    manager = create_manager(workdir)
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir / CHECKPOINT_DIR} holds no finished checkpoint.")
    # Onto this process's first device, whatever mesh saved it (8 GPUs -> 1 CPU works).
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        manager.item_metadata(step).tree,
    )
    state = manager.restore(step, args=ocp.args.StandardRestore(target))
    manager.close()
    return state, int(step)


def check_shapes(saved: PyTree, target: PyTree, workdir: str | os.PathLike, step: int) -> None:
    """Raises the workdir-naming error if `saved` and `target` differ in structure or shape."""
    problems = _shape_mismatches(saved, target)
    if problems:
        raise _mismatch_error(Path(workdir).absolute(), step, problems)


# ---------------------------------------------------------------- the run's config


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config saved in `workdir/config.json`."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {workdir} was not written by one of our trainers; pass the "
            "workdir given to `python -m train.predictor --workdir ...`."
        )
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def save_config(
    workdir: str | os.PathLike,
    config: ml_collections.ConfigDict | Mapping,
    shape_keys: Sequence[str] = ("model",),
    process_index: int | None = None,
) -> None:
    """Saves the config as `workdir/config.json`, refusing a workdir of another model shape.

    `shape_keys` are the config prefixes that fix parameter shapes (e.g. 'model'); other keys
    (steps, learning rate, logging) may change between a run and its resumption.
    """
    workdir = Path(workdir)
    new = run_record.plain(config)
    path = workdir / CONFIG_FILE
    if path.is_file():
        fixes_shapes = lambda k: any(k == p or k.startswith(p + ".") for p in shape_keys)
        diffs = run_record.differences(io.read_json(path), new, keep=fixes_shapes)
        if diffs:
            raise ValueError(
                f"{workdir} holds a run with another model shape ({'; '.join(diffs)}). Use a "
                f"fresh --workdir, or resume with the saved config ({path})."
            )
    if (jax.process_index() if process_index is None else process_index) == 0:
        io.atomic_write_json(path, new)


def host_state(state: PyTree) -> PyTree:
    """A state as numpy arrays (for bit-exact comparisons and export)."""
    return jax.tree.map(np.asarray, state)
