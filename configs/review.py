r"""The review page (and exports) of a synthetic dataset, for a person to judge it.

  python -m sample.review --config.data=runs/ltg --workdir=runs/ltg_review
  python -m sample.review --config.data=runs/ltg --workdir=runs/ltg_review \
      --config.oracle=ltg_jax/assets/oracle_bundle.msgpack \
      --config.exports=imagefolder,label_studio,fiftyone

`data` is the data/ folder an LTG run wrote (or the run's workdir). Writes, in the workdir:
<name>.html (open it in any browser; no server), and exports/<kind>/ for each export. The
page's Export button saves manifest_<name>.csv; pass it to the mining loop as
--config.review.manifest.<arm>=... or to `load_synthetic(root, manifest)`. The mining loop
writes these pages itself (<mining workdir>/review/<arm>.html). Takes seconds (an oracle adds
one forward pass over the dataset).
"""

import ml_collections

VARIANTS = ("default",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The review config (one variant)."""
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown review variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.data = ""  # a synthetic dataset folder (metadata.jsonl) or the LTG workdir holding it
    config.name = ""  # names the page and its manifest; '' = the dataset's run folder name
    config.manifest = ""  # open the page with these decisions (an earlier export)
    config.oracle = ""  # a predictor bundle: adds its verdict per sample ('' = none)
    config.exports = ()  # any of: imagefolder, label_studio, fiftyone
    config.batch_size = 256  # oracle scoring
    return config
