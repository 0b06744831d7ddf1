"""LTG vs unguided samples from the same seeds; see configs/guidance_study.py.

python -m sample.guidance_study --config configs/guidance_study.py --workdir runs/guidance_study
"""

from ltg_jax import cli, guidance_study

_CONFIG, _WORKDIR = cli.define_flags(
    "configs/guidance_study.py:VARIANT", "Folder of the study's runs and tables."
)


def main(argv):
    del argv
    cli.quiet_logging()
    guidance_study.run_study(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
