"""The command line: shipped configs by name, --help listing the flags, console scripts."""

import pathlib
import subprocess
import sys
import tomllib

import jax
import pytest

from ltg_jax import assets, cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_config_names_resolve_to_the_shipped_files(tmp_path):
    shipped = cli.shipped_config("ltg")
    assert shipped is not None and shipped.read_text() == (ROOT / "configs/ltg.py").read_text()
    argv = cli.resolve_config_args(["prog", "--config", "ltg:test", "--config=mine", "--x=1"])
    assert argv == ["prog", "--config", f"{shipped}:test", f"--config={shipped.parent}/mine.py",
                    "--x=1"]  # fmt: skip
    own = tmp_path / "ltg.py"
    own.write_text("")
    assert cli.resolve_config_args(["p", f"--config={own}:a"]) == ["p", f"--config={own}:a"]
    assert cli.shipped_config("no_such_config") is None


SHIPPED_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.stem)
def test_every_variant_of_a_shipped_config_builds_on_shipped_files(path):
    """The variants no other test runs (world, select, ...) break here, not in a user's run."""
    variants = cli.load_config_module(path).VARIANTS
    for variant in variants:
        for value in jax.tree.leaves(cli.load_config_file(path, variant).to_dict()):
            if isinstance(value, str) and value.startswith(str(assets.ASSETS)):
                assert pathlib.Path(value).exists(), f"{path.name}:{variant} names {value}"
    with pytest.raises(ValueError, match="choose from"):
        cli.load_config_file(path, "no_such_variant")


def test_help_lists_the_flags():
    done = subprocess.run([sys.executable, "-m", "sample.ltg", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (
        "--workdir" in done.stdout
        and "--config" in done.stdout
        and "--[no]distributed" in (done.stdout)
    )


def test_console_scripts_point_at_existing_functions():
    from ltg_jax import entrypoints

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {
        "ltg-sample",
        "ltg-grid",
        "ltg-mine",
        "ltg-review",
        "ltg-fidelity",
        "ltg-budget-curve",
        "ltg-mode-supply",
        "ltg-train",
    }
    for target in scripts.values():
        module, func = target.split(":")
        assert module == "ltg_jax.entrypoints" and callable(getattr(entrypoints, func))
