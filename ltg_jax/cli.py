"""What every absl entrypoint shares: the --config/--workdir flags, quiet logs, config files."""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags


def define_flags(
    config_hint: str,
    workdir_help: str,
    *,
    default_config: str | None = None,
    default_workdir: str | None = None,
) -> tuple[flags.FlagHolder, flags.FlagHolder]:
    """`--config file.py:variant` (with `--config.a.b=value` overrides) and `--workdir`."""
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


def run(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """`absl.app.run(main)`, with bad input reported in one line instead of a traceback.

    Our errors (ValueError, FileNotFoundError, e.g. an unsupported model folder) name the
    problem and the fix; LTG_TRACEBACK=1 shows the full traceback as well. `--config` may
    name a shipped config (see `resolve_config_args`).
    """

    def guarded(argv):
        try:
            return main(argv)
        except (ValueError, FileNotFoundError) as e:
            if os.environ.get("LTG_TRACEBACK") == "1":
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    argv = resolve_config_args(sys.argv if argv is None else argv)
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
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"ltg_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)
