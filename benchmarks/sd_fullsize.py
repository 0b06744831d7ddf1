r"""Stable Diffusion 1.5 at its published config (random weights), on the CPU: parity and memory.

1. Builds a random-weight folder with diffusers' own `save_pretrained` at the SD 1.5 config and
   rewrites it as a hub download is laid out (tools/make_fixtures.to_hub_layout: no VAE
   scaling_factor, legacy VAE attention names, PNDM scheduler config, tokenizer.json only).
2. Parity: diffusers' StableDiffusionPipeline + DDIMScheduler vs our LTGPipeline (ltg_scale 0)
   from the same initial latents, float32, at --size px, --steps steps, CFG 7.5.
3. Peak RSS of the README's SD command (`python -m sample.ltg --config configs/ltg.py:text`,
   bf16, remat decoder, guided) at 256 and 512 px, batch 1, --steps steps.

Needs the `reference` extra (torch, diffusers, transformers); ~20 min on 2 CPU cores:
  .venv/bin/python -m benchmarks.sd_fullsize --folder /tmp/sd15_hub
SD 2.1's published config at 768 px, memory only, with bf16 weights and full remat:
  .venv/bin/python -m benchmarks.sd_fullsize --model sd21 --folder /tmp/sd21_hub --no_parity \
      --rss_sizes 768 --extra="--config.param_dtype=bfloat16 --config.remat=all"
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SD15_UNET = dict(
    sample_size=64, cross_attention_dim=768, attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
)  # fmt: skip
SD15_VAE = dict(
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)  # fmt: skip
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
)  # fmt: skip


# SD 2.1 (768-v): linear projections, 5/10/20/20 heads of 64, a 1024-wide OpenCLIP-H text
# encoder (23 layers, as SD 2.x uses the penultimate of 24), v-prediction at 768 px.
SD21_UNET = dict(
    sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, use_linear_projection=True,
)  # fmt: skip
SD21_VAE = {**SD15_VAE, "sample_size": 768}
SD21_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=1024,
)  # fmt: skip
MODELS = {"sd15": (SD15_UNET, SD15_VAE, SD15_TEXT), "sd21": (SD21_UNET, SD21_VAE, SD21_TEXT)}


def build(folder: pathlib.Path, model: str = "sd15") -> None:
    """The SD 1.5- (or 2.1-) config random-weight folder, in hub layout (skipped if there)."""
    if (folder / "model_index.json").is_file():
        return
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(ROOT / "tools"))
    import make_fixtures

    torch.manual_seed(0)
    vocab = make_fixtures.tiny_vocab()
    special = {k: vocab[t] for k, t in (("bos_token_id", make_fixtures.BOS),
                                        ("eos_token_id", make_fixtures.EOS),
                                        ("pad_token_id", make_fixtures.EOS))}  # fmt: skip
    unet, vae, text = MODELS[model]
    UNet2DConditionModel(**unet).save_pretrained(folder / "unet")
    AutoencoderKL(**vae).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(**text, **special)).save_pretrained(folder / "text_encoder")
    DDIMScheduler().save_pretrained(folder / "scheduler")  # replaced by the hub's PNDM config
    make_fixtures.write_tokenizer(folder / "tokenizer", pad_token=make_fixtures.EOS)
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
        "feature_extractor": [None, None], "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers",
        "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }  # fmt: skip
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    if model == "sd15":  # SD 1.5's hub quirks; SD 2.1 stays in save_pretrained layout
        make_fixtures.to_hub_layout(folder)


def parity(folder: pathlib.Path, size: int, steps: int) -> dict:
    """max |ours - diffusers| / max |diffusers| of the unguided float32 images."""
    import jax
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from ltg_jax import LTGPipeline, sampling

    torch.set_num_threads(2)
    prompts = ["a photo of a cat"]
    z = sampling.initial_latents(jax.random.key(0), np.arange(1), (size // 8, size // 8, 4))
    ref = StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    ref.scheduler = DDIMScheduler.from_config(ref.scheduler.config)
    t0 = time.perf_counter()
    theirs = ref(
        prompts,
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=7.5,
        output_type="np",
        latents=torch.from_numpy(np.asarray(z).transpose(0, 3, 1, 2).copy()),
    ).images
    t_ref = time.perf_counter() - t0
    del ref
    pipe = LTGPipeline.from_pretrained(folder, dtype="float32")
    t0 = time.perf_counter()
    ours = pipe(
        prompts=prompts,
        ltg_scale=0.0,
        guidance_scale=7.5,
        num_inference_steps=steps,
        height=size,
        width=size,
        signal="entropy",
        progress=False,
    ).images
    t_ours = time.perf_counter() - t0
    rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    return {"size": size, "steps": steps, "max_rel_diff": rel, "diffusers_s": round(t_ref, 1),
            "ours_s_incl_compile": round(t_ours, 1)}  # fmt: skip


def peak_rss_gib(
    folder: pathlib.Path, size: int, steps: int, workdir: pathlib.Path, extra: list[str] = ()
) -> dict:
    """Peak RSS of the README's SD command (guided, bf16, remat decoder) at `size` px.

    `extra`: more --config flags (e.g. --config.param_dtype=bfloat16 --config.remat=all).
    """
    cmd = [
        sys.executable, "-m", "sample.ltg", "--config", "configs/ltg.py:text",
        f"--workdir={workdir}", f"--config.pipeline={folder}", "--config.class_names=cat",
        "--config.samples_per_class=1", "--config.batch_size=1", f"--config.resolution={size}",
        f"--config.sampler.num_steps={steps}", *extra,
    ]  # fmt: skip
    runner = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", runner, *cmd], cwd=ROOT, capture_output=True,
                         text=True, check=True)  # fmt: skip
    code, kib = out.stdout.split()[-2:]
    return {
        "size": size,
        "steps": steps,
        "flags": list(extra),
        "returncode": int(code),
        "peak_rss_gib": round(int(kib) / 2**20, 2),
        "wall_s": round(time.perf_counter() - t0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", default="/tmp/sd15_hub")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rss_sizes", default="256,512")
    p.add_argument("--model", default="sd15", choices=tuple(MODELS))
    p.add_argument("--no_parity", action="store_true", help="only the memory runs")
    p.add_argument("--extra", default="", help="more sample.ltg flags, space-separated")
    a = p.parse_args()
    folder = pathlib.Path(a.folder)
    build(folder, a.model)
    if not a.no_parity:
        print(json.dumps({"parity": parity(folder, a.size, a.steps)}), flush=True)
    for size in (int(s) for s in a.rss_sizes.split(",") if s):
        work = pathlib.Path(f"/tmp/sd_rss_{size}_{int(time.time())}")
        rss = peak_rss_gib(folder, size, a.steps, work, a.extra.split())
        print(json.dumps({"rss": rss}), flush=True)
    print(json.dumps({"self_peak_rss_gib": round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
