"""LTG vs unguided samples from the same seeds; see configs/guidance_study.py.

python -m sample.guidance_study --config configs/guidance_study.py --workdir runs/guidance_study
"""

from absl import app, flags, logging
from ml_collections import config_flags

from ltg_jax import guidance_study

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/guidance_study.py:VARIANT")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of the study's runs and tables.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    guidance_study.run_study(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
