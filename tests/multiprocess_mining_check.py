"""The mining loop's generation stage, run as one of several processes (test_multiprocess.py).

    LTG_DISTRIBUTED=1 JAX_COORDINATOR_ADDRESS=... JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=i \
        python tests/multiprocess_mining_check.py WORKDIR PIPELINE PREDICTOR ORACLE
"""

import sys
from pathlib import Path

from ltg_jax import cli, mining, parallel, workdirs

ROOT = Path(__file__).resolve().parents[1]


def main(workdir: str, pipeline: str, predictor: str, oracle: str) -> None:
    parallel.maybe_initialize_distributed()
    config = cli.load_config_file(ROOT / "configs" / "mine.py", "test")
    config.pipeline, config.predictor, config.oracle = pipeline, predictor, oracle
    inputs = mining.check_inputs(config)
    with workdirs.claim(workdir):
        stages = mining.Stages(Path(workdir))
        for arm in mining.SYNTHETIC_ARMS:
            mining.generate(config, Path(workdir), arm, inputs.data, stages)


if __name__ == "__main__":
    main(*sys.argv[1:5])
