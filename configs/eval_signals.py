r"""How well each longtail signal finds the tail: AUROC few- vs many-class, wrong vs right.

  default  nice -n 10 python -m train.eval_signals --config configs/eval_signals.py \
               --config.bundle runs/epistemic_head/predictor_bundle.msgpack \
               --workdir runs/eval_signals
           Run time on 2 CPU cores: ~10 s of CPU (10,000 test images; 14 s wall while shared).
           Writes signal_auroc.json, signal_histograms.png and prints the AUROC table. Measured
           with the default predictor + heads (AUROC few-vs-many / misclassified-vs-correct):
             entropy 0.623 / 0.844, energy 0.607 / 0.783, max_softmax 0.628 / 0.843,
             epistemic 0.640 / 0.821, loss 0.631 / 0.999 (loss uses the true label).
  test     The first 256 test images.
"""

import ml_collections

from ltg_jax.data import datasets

VARIANTS = ("default", "test", "runlocal")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The signal-evaluation config of variant `arg` (default: 'default')."""
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown eval_signals variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.bundle = "runs/epistemic_head/predictor_bundle.msgpack"  # predictor + heads
    config.split = "test"
    config.batch_size = 500
    config.max_examples = 0  # 0 = the whole split
    config.temperature = 1.0  # energy temperature
    config.data = datasets.default_config()
    if variant in ("test", "runlocal"):
        config.max_examples = 256
        config.batch_size = 64
    return config
