r"""The generative data mining loop (docs/design.md §1.3) on the embedded default.

Variants (`--config configs/mine.py:VARIANT`):

  default  what `make mine` runs: LTG and unguided synthetic data topping up the tail, then
           the arms real / unguided / ltg fine-tuned from the shipped predictor over 3 seeds
           and evaluated on test. Resumable stage by stage (rerun the same command).
             python -m sample.mine --workdir=runs/mine
           Budget sized to finish in <= 15 min on 2 CPU cores (see RESULTS).
  select   the guidance sweep on the VALIDATION split (never test): a few settings of
           w / signal / grad_through / normalise with a small budget; writes selection.json.
             python -m sample.mine --config configs/mine.py:select --workdir=runs/mine_select
  world    the ground-truth benchmark (docs/world.md; `make world`): the world's shipped models,
           every arm and baseline, 3 generation x 3 fine-tuning seeds, the rare-mode test
           group test+rotate90 and the mode oracle's shares.
             python -m sample.mine --config configs/mine.py:world --workdir=runs/world
           1,696 s on 2 cores (2026-12-03, the 6,000-step world LDM, CFG 2, the review
           filter max_predictor_prob 0.05). test+rotate90: real 0.308 ± 0.007, unguided
           0.325 ± 0.034, ltg 0.323 ± 0.050 (before the filter: unguided 0.293 ± 0.017, ltg
           0.320 ± 0.031); rotated share of the generated images LTG 0.25 vs unguided 0.012
           at LTG class fidelity 0.34 (goal 2 not met: docs/world.md).
  world_val  the benchmark's synthetic arms on VALIDATION (validation+rotate90), 3 generation x
           2 fine-tuning seeds: checks a setting over generation seeds before test is read
           (world_select draws one generated set per candidate). At 4x the budget
           (--config.budget.{many,medium,few}=128, 1,419 s; docs/world.md), validation+rotate90:
           real 0.309 ± 0.014, unguided 0.356 ± 0.025, ltg 0.380 ± 0.034 (filter P 0.05).
  world_select  the world's guidance sweep on validation+rotate90 (`make world-select`, 43 min).
  world_select_review  its pick under the review filters and fine-tuning mixes, same split.
  test     tiny budgets for the tests (pass your own tiny models with --config.pipeline,
           --config.predictor, --config.oracle).

Outputs: report.md (KPIs first), report.json (kpis, arms.<arm>.<many|medium|few|overall>.
{mean,std}, arms.<arm>.label_fidelity, seeds, wall_time_s, clusters with descriptors),
accuracy_groups.png, accuracy_per_class.png, label_fidelity.png, hardest_ltg.png,
clusters/*.png; review/<arm>.html (the review pages); synthetic/<arm>/ (datasets + annotated
contact sheets); finetune/<arm>/seed_<s>/ (orbax checkpoints, eval.json).

Baselines: the long-tail methods a practitioner tries first, at the same fine-tuning budget,
join a run (a finished one too: only the new arms are fine-tuned) with
  python -m sample.mine --workdir=runs/mine \
    --config.arms=real,real+balanced,real+logit_adjusted,unguided,ltg,ltg+logit_adjusted
`+balanced` draws every class equally often; `+logit_adjusted` trains with the
logit-adjusted loss (Menon et al. 2021, tau = config.baselines.logit_adjustment_tau).

Review: open review/ltg.html, judge the samples, Export manifest_ltg.csv, then rerun the same
command with --config.review.manifest.ltg=manifest_ltg.csv (any manifest works: a JSON list,
{"accept": [...], "reject": [...]}, or CSV file_name[,decision[,note]]). The same workdir
resumes: review, the fine-tuning of the arms whose kept samples changed, and the report rerun.

RESULTS (2026-12-02, 2 CPU cores, jax 0.10.2, shipped LDM + predictor + oracle; copy of the
report in docs/mine/): `make mine` took 298 s end to end (venv present, warm compile cache):
generate ltg 62 s (288 images, epistemic w = 2, grad_through = unet), unguided 21 s, each of
9 fine-tunes ~23 s. The same figures as the commit before the real-models issue, bit for bit.
Test accuracy, mean ± std over fine-tuning seeds 0-2 (one synthetic set per arm, so the spread
does not include generation noise):
  arm       many           medium         few            overall
  real      0.937 ± 0.003  0.669 ± 0.005  0.884 ± 0.016  0.841 ± 0.004
  unguided  0.932 ± 0.002  0.701 ± 0.003  0.899 ± 0.007  0.853 ± 0.002
  ltg       0.928 ± 0.002  0.684 ± 0.001  0.917 ± 0.004  0.852 ± 0.001
Label fidelity (oracle): unguided 0.979, ltg 0.934. On validation (`select`) unguided was ahead
on few-shot (0.900 vs 0.893), so the test gap is not yet a robust finding. Rerun after the
attention change (jax.nn.dot_product_attention): real and unguided bit for bit, ltg within
0.0003 (many 0.9285, medium 0.6841, overall 0.8518; few unchanged).

`make mine-spread` (docs/mine_spread/, 3 generation x 3 fine-tuning seeds): LTG - unguided is
+1.2 points few-shot (+1.8, +0.2, +1.5 per generation seed; sum of stds 1.4: within the
spread), and the real-data logit adjustment beats every synthetic arm (few 0.925, overall
0.872; ltg 0.913 / 0.851; ltg+logit_adjusted 0.914 / 0.865). See README, "Results".
"""

from pathlib import Path

import ml_collections

from ltg_jax import assets, cli
from ltg_jax.data import datasets

VARIANTS = (
    "default", "select", "world", "world_val", "world_select", "world_select_review", "test",
)  # fmt: skip


def _ltg_config(variant: str) -> ml_collections.ConfigDict:
    return cli.load_config_file(Path(__file__).with_name("ltg.py"), variant)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The mining config of variant `arg` (default: 'default')."""
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown mine variant {variant!r}; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.predictor = str(assets.PREDICTOR_BUNDLE)  # predictor + epistemic heads
    config.pipeline = str(assets.EMBEDDED_LDM)  # diffusers-format class-conditional folder
    config.oracle = str(assets.ORACLE_BUNDLE)  # judges label fidelity (balanced data)
    config.seeds = (0, 1, 2)  # fine-tuning seeds per arm
    # Generation seeds of the synthetic arms (each adds to config.ltg.seed): every synthetic
    # arm is generated and fine-tuned once per generation seed, so the report's spread holds
    # generation noise as well as fine-tuning noise. `real` does not depend on them. One seed
    # keeps `make mine` within 15 minutes; `make mine-spread` runs 0,1,2 with the baselines.
    config.generation_seeds = (0,)
    # real / unguided / ltg, each optionally '+balanced' or '+logit_adjusted' (the long-tail
    # baselines: class-balanced resampling, Menon et al.'s logit-adjusted loss), e.g.
    # --config.arms=real,real+balanced,real+logit_adjusted,unguided,ltg,ltg+logit_adjusted
    config.arms = ("real", "unguided", "ltg")
    config.baselines = ml_collections.ConfigDict()
    config.baselines.logit_adjustment_tau = 1.0  # Menon et al. 2021's default

    config.data = datasets.default_config()  # the real long-tailed data
    config.max_train_examples = 0  # 0 = all 12,406 real training images

    # Synthetic samples per class by frequency group (the tail is topped up most), unless
    # budget.per_class gives one count (all classes) or one per class.
    config.budget = ml_collections.ConfigDict()
    config.budget.many = 0
    config.budget.medium = 32
    config.budget.few = 64
    config.budget.per_class = ()

    # The sampling of both synthetic arms (configs/ltg.py keys); `unguided` only sets w = 0.
    config.ltg = _ltg_config("epistemic")
    # The `select` sweep's pick on validation (see guidance_choice).
    config.ltg.signal = "epistemic"
    config.ltg.sampler.guidance.w = 2.0
    config.ltg.sampler.guidance.grad_through = "unet"
    config.ltg.batch_size = 32
    config.ltg.seed = 0
    # Use an existing (e.g. reviewed) dataset folder for an arm instead of generating it.
    config.synthetic = ml_collections.ConfigDict({"ltg": "", "unguided": ""})

    config.review = ml_collections.ConfigDict()
    config.review.manifest = ml_collections.ConfigDict({"ltg": "", "unguided": ""})
    # Keep a sample when the oracle's class is its conditioning class, or the oracle gives that
    # class probability >= oracle_tau; the same rule for both arms (label noise hurts either).
    config.review.oracle_filter = True
    config.review.oracle_tau = 0.3
    # Stricter: also require the oracle's probability of the class to be >= this (0 = off);
    # drops the samples guidance leaves near a class boundary (docs/medium_shot.md).
    config.review.oracle_min_prob = 0.0
    # Mining's own filter: keep only the samples the predictor being mined gives their class a
    # probability below this (it gets them wrong or is unsure), for both arms; 1 = off.
    config.review.max_predictor_prob = 1.0

    # One schedule for every arm: AdamW, warmup + cosine, from the shipped predictor's params.
    config.finetune = ml_collections.ConfigDict()
    config.finetune.num_steps = 150
    config.finetune.batch_size = 128
    config.finetune.learning_rate = 3e-4
    config.finetune.warmup_steps = 10
    config.finetune.weight_decay = 1e-4
    config.finetune.synthetic_fraction = 0.25  # share of each batch from the synthetic set
    # "class_balanced": synthetic rows drawn with every class equally often, whatever each
    # class kept after the filter (the real rows' counterpart is an arm's +balanced);
    # "predictor_loss": each drawn in proportion to the predictor's loss on its class (a soft
    # review.max_predictor_prob that drops nothing)
    config.finetune.synthetic_sampling = "uniform"
    config.finetune.augment = True
    config.finetune.checkpoint_every = 50

    config.eval = ml_collections.ConfigDict()
    config.eval.split = "test"  # `select` uses validation; the default reports test
    config.eval.batch_size = 500
    config.eval.max_examples = 0  # 0 = the whole split
    # Shifted copies of the eval split every arm is also evaluated on (ltg_jax/data/shifts.py:
    # rotate90, shrink, occlude, low_contrast, noise); may be added to a finished run.
    config.eval.shifts = ()

    config.report = ml_collections.ConfigDict()
    config.report.hardest_per_class = 16
    config.report.clusters = 3
    config.report.sheet_columns = 8
    # Optional: a classifier of the generated images' modes (a bundle or package.module:factory,
    # e.g. the world benchmark's upright / rotated oracle); the report gives each generated
    # set's share of `rare_mode` and how well the clusters of the hardest LTG samples isolate it.
    config.report.mode_oracle = ""
    config.report.rare_mode = "rotated"
    # Classes left out of the overall mode shares (their mode is beyond the mode oracle).
    config.report.mode_unscored_classes = ()
    # Optional: explain the clusters with a VLM behind an OpenAI-compatible endpoint (vLLM,
    # llama.cpp server, Ollama, LM Studio), e.g. endpoint=http://127.0.0.1:8000/v1 and
    # model=llava-hf/llava-1.5-7b-hf. '' = none: the report gives measured descriptors only.
    config.report.vlm = ml_collections.ConfigDict()
    config.report.vlm.endpoint = ""
    config.report.vlm.model = ""
    config.report.vlm.api_key_env = ""  # the environment variable holding a key, if needed
    config.report.vlm.timeout_s = 60.0
    config.report.vlm.max_tokens = 300

    config.guidance_choice = (
        "epistemic signal, w = 2.0, grad_through = unet, normalise = unit: the best LTG "
        "candidate of `select` by validation few-shot accuracy (2 seeds, 16/32 samples per "
        "medium/few class): epistemic_w2_unet few 0.893 / overall 0.847, entropy_w2 0.885 / "
        "0.843, epistemic_w4 0.887 / 0.840, epistemic_w2 0.883 / 0.838; baselines real 0.890 / "
        "0.837, unguided 0.900 / 0.851 (runs/mine_select/selection.json, 2026-11-28)."
    )

    # Data efficiency (python -m sample.budget_curve, ltg_jax/budget_curve.py): the loop once
    # per budget scale; accuracy on curve.split ('' = eval.split) and curve.group vs images.
    config.curve = ml_collections.ConfigDict()
    config.curve.scales = (0.25, 0.5, 1.0, 2.0)
    config.curve.split = ""
    config.curve.group = "few"

    # The perfect generator's ceiling on the benchmark (python -m sample.mode_supply,
    # ltg_jax/mode_supply.py): true world images at each rotated share, one draw per
    # generation seed; compare_report: a mining report.json whose sets are put beside it.
    config.supply = ml_collections.ConfigDict()
    config.supply.shares = (0.0, 0.0625, 0.25, 1.0)
    config.supply.compare_report = ""

    config.select = ml_collections.ConfigDict()
    config.select.rank_by = "validation"  # or a shifted validation split, e.g. validation+rotate90
    config.select.rank_group = "few"  # many | medium | few | overall
    # Each candidate names keys of the ltg config, or finetune.* / review.* keys (the
    # fine-tuning mix, the filter). Sized to run in ~10 min on 2 cores: signal, weight and
    # grad_through, one at a time.
    config.select.candidates = (
        {"name": "epistemic_w2", "signal": "epistemic", "sampler.guidance.w": 2.0,
         "sampler.guidance.grad_through": "z0"},
        {"name": "epistemic_w4", "signal": "epistemic", "sampler.guidance.w": 4.0,
         "sampler.guidance.grad_through": "z0"},
        {"name": "entropy_w2", "signal": "entropy", "sampler.guidance.w": 2.0,
         "sampler.guidance.grad_through": "z0"},
        {"name": "epistemic_w2_unet", "signal": "epistemic", "sampler.guidance.w": 2.0,
         "sampler.guidance.grad_through": "unet"},
    )  # fmt: skip

    if variant in ("world", "world_val", "world_select", "world_select_review"):
        world_benchmark(config)
    if variant in ("world", "world_val"):  # the world_select pick; unguided shares the sampler
        config.ltg.signal = "entropy"
        config.ltg.sampler.guidance.w = 8.0
        config.ltg.sampler.guidance.grad_through = "z0"
        config.ltg.sampler.guidance.end = 0.4  # the noisiest 40% of steps only
        # world_select_review's pick: keep what the predictor gives its class < 0.05 (both arms)
        config.review.max_predictor_prob = 0.05
        config.guidance_choice = WORLD_GUIDANCE_CHOICE
    if variant == "world_val":  # the benchmark on validation: a setting's spread over generations
        config.eval.split = "validation"
        config.seeds = (0, 1)
        config.arms = ("real", "unguided", "ltg")
    if variant in ("select", "world_select", "world_select_review"):
        config.eval.split = "validation"
        config.generation_seeds = (0,)
        config.seeds = (0, 1)
        config.budget.medium = 16
        config.budget.few = 32
    if variant in ("world_select", "world_select_review"):
        config.budget.many = config.budget.medium = config.budget.few = 16
        config.select.candidates = world_candidates()
        if variant == "world_select_review":
            config.select.candidates = world_review_candidates()
        config.select.rank_by = "validation+rotate90"  # the rare-mode group,
        config.select.rank_group = "overall"  # of every class: the worst-group accuracy
    elif variant == "test":
        config.seeds = (0, 1, 2)
        config.generation_seeds = (0,)
        config.max_train_examples = 256
        config.budget.medium = 0
        config.budget.few = 2
        config.ltg = _ltg_config("test")
        config.ltg.signal = "entropy"
        config.ltg.batch_size = 2
        config.finetune.num_steps = 4
        config.finetune.batch_size = 16
        config.finetune.warmup_steps = 1
        config.finetune.checkpoint_every = 2
        config.eval.batch_size = 64
        config.eval.max_examples = 128
        config.review.oracle_filter = False  # a random tiny oracle would reject everything
        config.report.hardest_per_class = 4
        config.report.clusters = 2
        config.report.sheet_columns = 4
        config.select.candidates = (
            {"name": "w1", "sampler.guidance.w": 1.0},
            {"name": "w2_entropy", "signal": "entropy", "sampler.guidance.w": 2.0},
            # w1's samples, half of each fine-tuning batch synthetic
            {"name": "w1_half", "sampler.guidance.w": 1.0, "finetune.synthetic_fraction": 0.5},
        )
    return config


def world_benchmark(config: ml_collections.ConfigDict) -> None:
    """The ground-truth benchmark (ltg_jax/data/world.py): its shipped models, the rare-mode
    test group (test+rotate90) and the mode oracle; the rare mode is in every class, so every
    class gets synthetic samples."""
    config.data.config = "world"
    config.predictor = str(assets.WORLD_PREDICTOR_BUNDLE)
    config.pipeline = str(assets.WORLD_LDM)
    config.oracle = assets.WORLD_CLASS_ORACLE
    config.report.mode_oracle = str(assets.WORLD_MODE_ORACLE)
    config.report.rare_mode = "rotated"
    # A bag on its side looks like a bag: the mode oracle errs on 37% of upright and 24% of
    # rotated test bags (every other class <= 1%), so bags do not count in the mode shares.
    config.report.mode_unscored_classes = ("Bag",)
    config.eval.shifts = ("rotate90",)
    config.budget.many = 32
    config.budget.medium = 32
    config.budget.few = 32
    config.generation_seeds = (0, 1, 2)
    config.arms = ("real", "real+balanced", "real+logit_adjusted", "unguided", "ltg",
                   "ltg+logit_adjusted")  # fmt: skip
    config.curve.split = "test+rotate90"  # the rare-mode group's accuracy, every class
    config.curve.group = "overall"
    config.ltg.sampler.cfg_scale = assets.WORLD_CFG_SCALE  # both synthetic arms


WORLD_GUIDANCE_CHOICE = (
    "entropy signal, w = 8 in the noisiest 40% of steps, grad_through = z0, CFG 2: the best LTG "
    "candidate of world_select by validation+rotate90 overall accuracy (2 fine-tuning seeds, "
    "16 samples per class): entropy_w8_early 0.354, energy_w2 0.305, entropy_w4_cfg1 0.294, "
    "entropy_w2 0.288, epistemic_w4 0.277, epistemic_w2 0.276, entropy_w4 0.261, "
    "entropy_w4_unet 0.248; the class-keeping frontier pick (w 2 through the UNet, noisiest "
    "40%, CFG 3) 0.326 with entropy, 0.298 with epistemic; the pick with half-synthetic "
    "batches 0.353, with the strict filter 0.336; baselines real 0.309, unguided 0.307 "
    "(runs/world_select/selection.json, 2026-12-03, the 6,000-step world LDM). Review: keep "
    "only the samples the predictor gives their class a probability below 0.05, the best of "
    "world_select_review on the same criterion: 0.410 (8 of 160 kept), 0.02 0.382, 0.1 0.389, "
    "0.3 0.371, 0.5 0.366, no filter 0.355, class-balanced synthetic rows 0.343 "
    "(runs/world_select_review/selection.json, 2026-12-03)."
)


# world_select's pick (WORLD_GUIDANCE_CHOICE) as candidate keys.
WORLD_PICK = {"signal": "entropy", "sampler.guidance.w": 8.0, "sampler.guidance.end": 0.4,
              "sampler.guidance.grad_through": "z0"}  # fmt: skip


def world_candidates() -> tuple[dict, ...]:
    """The world_select sweep at the world sampler's CFG: each signal at the default weight,
    entropy and epistemic at twice it, through z0; the two settings of the guidance study
    that turned more garments per unit of fidelity lost (the gradient through the UNet, a
    strong weight in the noisiest 40% of steps: docs/world.md); and CFG off, where the
    generator draws the mode most often. Then the guidance frontier's pick, which keeps the
    class (docs/world.md), and the first pick under another fine-tuning mix and filter."""
    z0 = {"sampler.guidance.grad_through": "z0"}
    per_signal = tuple(
        {"name": f"{signal}_w{w:g}", "signal": signal, "sampler.guidance.w": w, **z0}
        for signal, w in (("entropy", 2.0), ("entropy", 4.0), ("energy", 2.0),
                          ("epistemic", 2.0), ("epistemic", 4.0))
    )  # fmt: skip
    frontier = (
        {"name": "entropy_w4_unet", "signal": "entropy", "sampler.guidance.w": 4.0,
         "sampler.guidance.grad_through": "unet"},
        {"name": "entropy_w8_early", "signal": "entropy", "sampler.guidance.w": 8.0,
         "sampler.guidance.end": 0.4, **z0},
        {"name": "entropy_w4_cfg1", "signal": "entropy", "sampler.guidance.w": 4.0,
         "sampler.cfg_scale": 1.0, **z0},
    )  # fmt: skip
    # The guidance frontier's pick (docs/world.md): rotated garments at >= 0.85 class fidelity.
    unet_early_cfg3 = {"sampler.guidance.w": 2.0, "sampler.guidance.grad_through": "unet",
                       "sampler.guidance.end": 0.4, "sampler.cfg_scale": 3.0}  # fmt: skip
    faithful = tuple(
        {"name": f"{signal}_w2_unet_early_cfg3", "signal": signal, **unet_early_cfg3}
        for signal in ("epistemic", "entropy")
    )
    # The first sweep's pick on the same samples, with half of each fine-tuning batch
    # synthetic, or kept only where the oracle gives the class >= 0.9.
    mixes = (
        {"name": "entropy_w8_early_half", **WORLD_PICK, "finetune.synthetic_fraction": 0.5},
        {"name": "entropy_w8_early_strict", **WORLD_PICK, "review.oracle_min_prob": 0.9},
    )
    return per_signal + frontier + faithful + mixes


def world_review_candidates() -> tuple[dict, ...]:
    """The world_select_review sweep: world_select's pick, once as chosen and then on the same
    samples under mining's own filter (keep only what the predictor gives its class less
    than p: docs/world.md, "What the rotated samples are worth") and with synthetic rows drawn
    with every class equally often (the oracle filter keeps LTG's bags 3x as often as its
    dresses)."""
    return (
        {"name": "entropy_w8_early", **WORLD_PICK},
        *({"name": f"entropy_w8_early_fails{p:g}", **WORLD_PICK, "review.max_predictor_prob": p}
          for p in (0.5, 0.3, 0.1, 0.05, 0.02)),
        {"name": "entropy_w8_early_balanced", **WORLD_PICK,
         "finetune.synthetic_sampling": "class_balanced"},
    )  # fmt: skip
