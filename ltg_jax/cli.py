"""What every absl entrypoint shares: the --config/--workdir flags, quiet logs, config files."""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from ltg_jax import checks, workdirs


def define_flags(
    config_hint: str,
    workdir_help: str,
    *,
    default_config: str | None = None,
    default_workdir: str | None = None,
) -> tuple[flags.FlagHolder, flags.FlagHolder]:
    """`--config file.py:variant` (with `--config.a.b=value` overrides) and `--workdir`."""
    if default_config:  # config_flags applies the overrides to a default right here
        path, _, variant = default_config.partition(":")  # a default may name its variant
        _check_or_exit(sys.argv, load_config_file(path, variant or None))
    config = config_flags.DEFINE_config_file("config", default_config, config_hint)
    workdir = flags.DEFINE_string("workdir", default_workdir, workdir_help)
    required = [n for n, d in (("config", default_config), ("workdir", default_workdir)) if not d]
    if required:
        flags.mark_flags_as_required(required)
    return config, workdir


def define_distributed_flag() -> flags.FlagHolder:
    """`--distributed`: call jax.distributed.initialize() (default: env LTG_DISTRIBUTED=1)."""
    return flags.DEFINE_bool(
        "distributed", None, "Call jax.distributed.initialize() (default: env LTG_DISTRIBUTED=1)."
    )


def shipped_config(name: str) -> Path | None:
    """The config file shipped with the package ('ltg', 'ltg.py', 'configs/ltg.py'), if any."""
    stem = Path(name).name
    stem = stem if stem.endswith(".py") else f"{stem}.py"
    try:
        candidate = Path(str(importlib.resources.files("ltg_jax.configs") / stem))
    except ModuleNotFoundError:  # a source tree on PYTHONPATH, not installed
        return None
    return candidate if candidate.is_file() else None


def resolve_config_args(argv: list[str]) -> list[str]:
    """`--config NAME[:variant]` names a shipped config when NAME is not an existing file.

    So `ltg-sample --config ltg:epistemic` (installed, from any directory) and
    `python -m sample.ltg --config configs/ltg.py:epistemic` (in the repo) both work.
    """
    out, i = list(argv), 0
    while i < len(out):
        arg = out[i]
        if arg == "--config" and i + 1 < len(out):
            i += 1
            value, prefix = out[i], ""
        elif arg.startswith("--config="):
            value, prefix = arg.split("=", 1)[1], "--config="
        else:
            i += 1
            continue
        path, sep, variant = value.partition(":")
        found = None if Path(path).is_file() else shipped_config(path)
        if found is not None:
            out[i] = f"{prefix}{found}{sep}{variant}"
        i += 1
    return out


def shipped_names() -> list[str]:
    """Names of the configs shipped with the package ('ltg', 'mine', ...)."""
    try:
        files = importlib.resources.files("ltg_jax.configs").iterdir()
    except ModuleNotFoundError:
        return []
    return sorted(f.name[:-3] for f in files if f.name.endswith(".py") and f.name[0] != "_")


def _overrides(argv: list[str]) -> list[str]:
    """The dotted keys of `--config.a.b=v` / `--config.a.b v` arguments, in order."""
    return [a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]


def _given_config(
    argv: list[str], default: ml_collections.ConfigDict | None
) -> ml_collections.ConfigDict | None:
    """The config `--config` names (loaded), else `default`."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    values += [v for a, v in zip(argv, argv[1:], strict=False) if a == "--config"]
    if len(values) > 1:
        raise ValueError(f"--config is given {len(values)} times ({values}); give it once")
    if not values:
        return default
    path, _, variant = values[0].partition(":")
    if not Path(path).is_file():
        raise ValueError(
            f"--config={values[0]}: no such config file; give a file (configs/ltg.py:VARIANT) "
            f"or a shipped config by name: {', '.join(shipped_names())}"
        )
    try:
        return load_config_file(path, variant or None)
    except ValueError as e:
        raise ValueError(f"--config={values[0]}: {e}") from None


def check_config_args(argv: list[str], default: ml_collections.ConfigDict | None = None) -> None:
    """Refuses what absl would take silently or with a traceback, in one line each.

    A repeated `--config.key` (ml_collections would join list values), and a key the config
    does not have (an AttributeError deep in the flag parser).
    """
    keys = _overrides(argv)
    for key in dict.fromkeys(k for k in keys if keys.count(k) > 1):
        raise ValueError(
            f"--{key} is given {keys.count(key)} times; give it once (a list takes commas: "
            f"--{key}=1,2)"
        )
    config = _given_config(argv, default)
    for key in keys if config is not None else ():
        parts = key.split(".")[1:]
        depth, node = checks.found_key_parts(config, parts)
        if depth < len(parts):
            where = ".".join(["config", *parts[:depth]])
            known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            raise ValueError(
                f"--{key}: the config has no such key; {where} has "
                f"{', '.join(known) if known else 'no sub-keys'}"
            )


def _fail(error: Exception) -> None:
    """Exit 2 with `error: <one line>` (LTG_TRACEBACK=1: raise it, with its traceback)."""
    if os.environ.get("LTG_TRACEBACK") == "1":
        raise error
    plain = not isinstance(error, OSError) or error.errno is None  # our own message
    print(f"error: {error if plain else workdirs.os_error_message(error)}", file=sys.stderr)
    sys.exit(2)


def _check_or_exit(argv: list[str], default: ml_collections.ConfigDict | None) -> None:
    try:
        check_config_args(resolve_config_args(argv), default)
    except ValueError as e:
        _fail(e)


def run(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """`absl.app.run(main)`, with bad input reported in one line instead of a traceback.

    Our errors (ValueError, FileNotFoundError, e.g. an unsupported model folder) name the
    problem and the fix, OS errors (disk full, read-only) the file and the fix; LTG_TRACEBACK=1
    shows the full traceback instead. `--config` may name a shipped config (see
    `resolve_config_args`); its overrides are checked first (see `check_config_args`).
    """

    def guarded(argv):
        try:
            if "config" in flags.FLAGS:
                checks.check_config_finite(flags.FLAGS["config"].value)
            return main(argv)
        except (ValueError, OSError) as e:
            _fail(e)

    argv = resolve_config_args(sys.argv if argv is None else argv)
    default = flags.FLAGS["config"].default if "config" in flags.FLAGS else None
    _check_or_exit(argv, default if isinstance(default, ml_collections.ConfigDict) else None)
    # --help lists the main module's key flags; ours are defined here and in the entrypoint.
    for module in (__name__, main.__module__):
        for flag in flags.FLAGS.get_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(argv[0], flag)
    app.run(guarded, argv=argv)


def quiet_logging() -> None:
    """WARNING unless --verbosity was given: jax and orbax log every compile and save at INFO."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def load_config_file(
    path: str | os.PathLike, variant: str | None = None
) -> ml_collections.ConfigDict:
    """`get_config(variant)` of a config file, loaded by path as config_flags does.

    A config that builds on another one (and a test) loads it
    with this rather than an import that would depend on the working directory.
    """
    return load_config_module(path).get_config(variant)


def load_config_module(path: str | os.PathLike) -> types.ModuleType:
    """The module of a config file, loaded by path (its get_config, VARIANTS, ...)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"ltg_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
