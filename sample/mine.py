"""The generative data mining loop (what `make mine` runs); see configs/mine.py.

python -m sample.mine --workdir=runs/mine                       # the main job, resumable
python -m sample.mine --config configs/mine.py:select --workdir=runs/mine_select
"""

from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from ltg_jax import mining

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "mine.py")
_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "configs/mine.py:VARIANT")
_WORKDIR = flags.DEFINE_string("workdir", "runs/mine", "Output folder (rerun to resume).")


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # jax logs its backend probing at INFO
    config = _CONFIG.value
    if config.variant == "select":
        out = mining.run_selection(config, _WORKDIR.value)
        print(f"selection: {Path(_WORKDIR.value) / mining.SELECTION_JSON} (best: {out['best']})")
        return
    out = mining.run_mining(config, _WORKDIR.value)
    print(mining.headline(out, _WORKDIR.value), flush=True)


if __name__ == "__main__":
    app.run(main)
