"""The review page (and exports) of a synthetic dataset; see configs/review.py.

python -m sample.review --config.data=runs/ltg --workdir=runs/ltg_review
"""

from ltg_jax import cli, review

DEFAULT_CONFIG = str(cli.shipped_config("review.py"))
_CONFIG, _WORKDIR = cli.define_flags(
    "configs/review.py", "Output folder for the page and exports.", default_config=DEFAULT_CONFIG
)


def main(argv):
    del argv
    cli.quiet_logging()
    out = review.run_review(_CONFIG.value, _WORKDIR.value)
    print(f"review page: {out['page']} ({out['samples']} samples); open it in a browser")
    for kind, path in out["exports"].items():
        print(f"export {kind}: {path}")


if __name__ == "__main__":
    cli.run(main)
