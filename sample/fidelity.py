"""Class fidelity of a class-conditional diffusion model; see configs/fidelity.py.

python -m sample.fidelity --config configs/fidelity.py --workdir runs/fidelity
"""

from ltg_jax import cli, fidelity

_CONFIG, _WORKDIR = cli.define_flags("configs/fidelity.py:VARIANT", "Folder of the results.")


def main(argv):
    del argv
    cli.quiet_logging()
    fidelity.run_fidelity(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
