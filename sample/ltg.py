"""Longtail Guidance sampling into a resumable synthetic dataset; see configs/ltg.py.

python -m sample.ltg --config configs/ltg.py:epistemic --workdir runs/ltg
Multi-host (TPU pod / several GPU hosts): the same command on every process with
LTG_DISTRIBUTED=1 (or --distributed).
"""

from ltg_jax import cli, ltg_sampling, parallel

_CONFIG, _WORKDIR = cli.define_flags(
    "configs/ltg.py:VARIANT", "Output folder (rerun the same command to resume)."
)
_DISTRIBUTED = cli.define_distributed_flag()


def main(argv):
    del argv
    cli.quiet_logging()
    parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
    summary = ltg_sampling.run_ltg(_CONFIG.value, _WORKDIR.value)
    if parallel.is_process_zero():
        print(f"{summary['num_samples']} samples in {_WORKDIR.value}/data "
              f"({summary['wall_time_s']:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
