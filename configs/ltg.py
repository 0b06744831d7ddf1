r"""Longtail Guidance sampling into a synthetic dataset (docs/design.md §1.2, §1.3).

Variants: epistemic (default), entropy, energy, loss, weighted (entropy + epistemic),
unguided (w = 0, the baseline), text (a Stable Diffusion folder with prompts), test (tiny).

  python -m sample.ltg --config configs/ltg.py:epistemic --workdir runs/ltg_epistemic
  python -m sample.ltg --config configs/ltg.py:unguided --workdir runs/ltg_unguided \
      --config.samples_per_class=32 --config.classes=5,8,9
  # Stable Diffusion folder, prompts "a photo of a {class}", our 32x32 grey predictor:
  python -m sample.ltg --config configs/ltg.py:text --workdir runs/ltg_sd \
      --config.pipeline=/models/sd15 --config.class_names=cat,dog

Writes workdir/data/<class>/<index>.png + data/metadata.jsonl, workdir/contact_sheets/*.png,
summary.json and config.json. Rerunning the same command resumes (kill it at any time).
`--config.samples_per_class` is one count for every class or one per class (8 or 8,16,...).

RESULTS (2 shared CPU cores, jax 0.10.2): not measured yet on the embedded model; the guidance
weight w is untuned (the mining-loop issue sweeps it on the validation split).
"""

import ml_collections

from ltg_jax import assets, sampling

SIGNALS = {
    "epistemic": "epistemic",
    "entropy": "entropy",
    "energy": "energy",
    "loss": "loss",
    "weighted": "entropy:1,epistemic:10",
}
VARIANTS = (*SIGNALS, "unguided", "text", "test")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The LTG sampling config of variant `arg` (default: 'epistemic')."""
    variant = arg or "epistemic"
    if variant not in VARIANTS:
        raise ValueError(f"unknown ltg variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.variant = variant  # recorded per sample as the guidance variant
    config.pipeline = str(assets.EMBEDDED_LDM)  # diffusers folder (class- or text-conditional)
    config.predictor = str(assets.PREDICTOR_BUNDLE)  # msgpack bundle or package.module:factory
    config.predictor_heads = ""  # heads.msgpack of train.epistemic_head for such a predictor
    # How decoded images become predictor inputs (ltg_jax.adapters); unset = the predictor's own.
    config.predictor_input = ml_collections.ConfigDict(
        {
            "size": (),  # (height, width)
            "crop": ml_collections.config_dict.placeholder(bool),  # resize short side + crop
            "channels": ml_collections.config_dict.placeholder(int),  # 1 | 3
            "range": ml_collections.config_dict.placeholder(str),  # [-1,1] | [0,1]
            "normalise": ml_collections.config_dict.placeholder(str),  # none | imagenet
            "mean": (),
            "std": (),
        }
    )
    config.classes = ()  # class ids to sample; empty = all classes
    config.class_names = ()  # empty = the predictor bundle's names
    config.prompt = "a photo of a {class}"  # text models only
    config.negative_prompt = ""  # text models: the CFG unconditional branch
    config.samples_per_class = (8,)  # one count for all classes, or one per class
    config.signal = SIGNALS.get(variant, "entropy")  # name or weighted sum 'a:1,b:0.5'
    config.seed = 0
    config.batch_size = 16  # global; a multiple of the device count; free to change on resume
    config.dtype = "float32"  # compute dtype: float32 | bfloat16 (accelerators)
    config.param_dtype = "float32"  # weights in memory: bfloat16 halves them (SD at 768 px)
    # none | decoder | all: rematerialise to fit guided backprop; ':dots_saveable' (a
    # jax.checkpoint_policies name) keeps matmul outputs: fewer FLOPs, more memory.
    config.remat = "none"
    # An AutoencoderTiny folder (TAESD format): the guidance gradient goes through this small
    # decoder instead of the full VAE's; the written images are still the full VAE's.
    config.tiny_decoder = ""
    config.resolution = ()  # pixels: () = the UNet's sample_size; 512 or 512,768 (h,w)
    config.sheet_columns = 8

    # ltg_jax.sampling's defaults, shared with LTGPipeline: 25 DDIM steps, w = 2, unit norm.
    config.sampler = sampling.default_config("text" if variant == "text" else "class")
    # sampler.guidance: w, w_schedule, w_end, grad_through, normalise, start/end (the window,
    # 0 = noisiest), stride, recurrence (ltg_jax.guidance.GuidanceConfig).

    if variant == "unguided":
        config.signal = "entropy"  # still scored and sorted by, never followed
        config.sampler.guidance.w = 0.0
    elif variant == "text":
        config.pipeline = ""  # required: --config.pipeline=/path/to/sd-folder
        config.class_names = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal",
                              "shirt", "sneaker", "bag", "ankle boot")  # fmt: skip
        config.prompt = "a photo of a {class}"
        config.signal = "entropy"
        config.samples_per_class = (4,)
        config.batch_size = 4
        config.dtype = "bfloat16"
        config.remat = "decoder"  # backprop through the 512 px decoder needs it
    elif variant == "test":
        config.samples_per_class = (2,)
        config.batch_size = 2
        config.sampler.num_steps = 2
        config.sheet_columns = 4
    return config
