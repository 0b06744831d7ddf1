"""Build tiny random SD-shaped PyTorch models and the golden outputs our Flax stack must match.

Run (needs the optional `reference` extra: torch, diffusers>=0.42, transformers>=5):
    .venv/bin/python tools/make_fixtures.py
Writes, in about 10 s on one CPU core (all together well under 2 MB):
    tests/fixtures/tiny_sd/       SD 1.x-shaped diffusers folder (conv proj_in, int head count,
                                  quick_gelu CLIP, pad token <|endoftext|>)
    tests/fixtures/tiny_sd2/      SD 2.x-shaped folder (linear proj_in, per-block head counts,
                                  2 transformer layers in one block, gelu CLIP, pad token "!");
                                  stored as fp16 `variant` files (unet, vae) and bf16 (CLIP)
    tests/fixtures/tiny_sd_outputs.npz   inputs and PyTorch outputs, NHWC, float32
The tests read only these files; they never import torch.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
PROMPTS = ["a photo of a cat", "The dog, on a MAT!  (photo)"]
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Merges chosen so the prompts exercise multi-step BPE merges, single chars and punctuation.
MERGES = [
    "p h", "ph o", "t o</w>", "pho to</w>", "o f</w>", "c a", "ca t</w>", "a t</w>",
    "t h", "th e</w>", "d o", "do g</w>", "o n</w>", "m at</w>",
]  # fmt: skip


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode char table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def tiny_vocab() -> dict[str, int]:
    """CLIP-layout vocab: 256 byte chars, the same with </w>, merge results, then bos/eos last."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in MERGES]
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}


def write_tokenizer(folder: pathlib.Path, pad_token: str) -> None:
    """Write vocab.json/merges.txt/configs the way SD hub folders ship them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tiny_vocab(), ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    cfg = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def unet_config(variant: str) -> dict:
    """Tiny UNet2DConditionModel config; sd2 uses linear projections and per-block heads."""
    cfg = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    if variant == "sd2":
        cfg.update(
            attention_head_dim=(1, 2, 4),
            use_linear_projection=True,
            upcast_attention=True,
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 1),
            flip_sin_to_cos=False,
            freq_shift=1,
        )
    return cfg


def vae_config() -> dict:
    """Tiny two-level AutoencoderKL config (16x16 images -> 8x8x4 latents)."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=16,
        scaling_factor=0.18215,
    )


def text_config(variant: str) -> dict:
    """Tiny CLIPTextConfig kwargs; sd1 uses quick_gelu (OpenAI CLIP), sd2 gelu (OpenCLIP)."""
    vocab = tiny_vocab()
    return dict(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu" if variant == "sd1" else "gelu",
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )


def build_folder(variant: str, folder: pathlib.Path, seed: int) -> None:
    """Create random torch models for one variant and save them as a diffusers folder."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config(variant))
    vae = AutoencoderKL(**vae_config())
    text = CLIPTextModel(CLIPTextConfig(**text_config(variant)))
    # Random init leaves norms at 1/0 and some projections at 0; perturb every tensor so a
    # wrong mapping of any single one is visible in the outputs.
    with torch.no_grad():
        for model in (unet, vae, text):
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    shutil.rmtree(folder, ignore_errors=True)
    if variant == "sd1":
        unet.save_pretrained(folder / "unet")
        vae.save_pretrained(folder / "vae")
        text.save_pretrained(folder / "text_encoder")
    else:  # half-precision storage: the fp16 variant file naming, and bf16 via ml_dtypes
        unet.half().save_pretrained(folder / "unet", variant="fp16")
        vae.half().save_pretrained(folder / "vae", variant="fp16")
        text.to(torch.bfloat16).save_pretrained(folder / "text_encoder")
    scheduler.save_pretrained(folder / "scheduler")
    write_tokenizer(folder / "tokenizer", pad_token=EOS if variant == "sd1" else "!")
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(
        json.dumps(model_index, indent=2, sort_keys=True) + "\n"
    )


def fixed_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic NHWC inputs shared by the golden outputs and the live tests."""
    rng = np.random.default_rng(seed)
    return {
        "latents": rng.standard_normal((2, 8, 8, 4)).astype(np.float32),
        "timesteps": np.array([3, 981], np.int32),
        "context": rng.standard_normal((2, 7, 16)).astype(np.float32),
        "images": rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32),
    }


def reference_outputs(folder: pathlib.Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the saved torch models (reloaded from `folder`) on NHWC inputs; NHWC float32 out."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1).astype(np.float32)
    variant = (
        "fp16" if (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists() else None
    )
    f32 = torch.float32  # half-stored weights are upcast: the goldens are float32 compute
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", variant=variant, torch_dtype=f32)
    vae = AutoencoderKL.from_pretrained(folder / "vae", variant=variant, torch_dtype=f32)
    text = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=f32)
    unet, vae, text = unet.eval(), vae.eval(), text.eval()
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        eps = unet(
            nchw(inputs["latents"]),
            torch.from_numpy(inputs["timesteps"]).long(),
            torch.from_numpy(inputs["context"]),
        ).sample
        out["unet_eps"] = nhwc(eps)
        post = vae.encode(nchw(inputs["images"])).latent_dist
        out["vae_mean"], out["vae_logvar"] = nhwc(post.mean), nhwc(post.logvar)
        out["vae_decoded"] = nhwc(vae.decode(nchw(inputs["latents"])).sample)
        ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids
        ids = np.asarray(ids, np.int32)
        out["token_ids"] = ids
        res = text(torch.from_numpy(ids).long(), output_hidden_states=True)
        out["text_hidden"] = res.last_hidden_state.numpy()
        out["text_pooled"] = res.pooler_output.numpy()
        # diffusers' clip_skip=1: penultimate layer, then the final LayerNorm.
        out["text_penultimate"] = text.final_layer_norm(res.hidden_states[-2]).numpy()
    return out


def main() -> None:
    import torch

    torch.set_num_threads(1)
    inputs = fixed_inputs()
    arrays = {f"inputs.{k}": v for k, v in inputs.items()}
    arrays["prompts"] = np.array(PROMPTS)
    for seed, variant in enumerate(("sd1", "sd2")):
        folder = FIXTURES / ("tiny_sd" if variant == "sd1" else "tiny_sd2")
        build_folder(variant, folder, seed)
        for k, v in reference_outputs(folder, inputs).items():
            arrays[f"{variant}.{k}"] = v
    np.savez_compressed(FIXTURES / "tiny_sd_outputs.npz", **arrays)
    try:  # scheduler golden outputs (tools/scheduler_fixtures.py, another engineer's module)
        sys.path.insert(0, str(ROOT / "tools"))
        from scheduler_fixtures import make_scheduler_fixtures
    except ImportError as e:
        print(f"scheduler fixtures not written ({e})")
    else:
        make_scheduler_fixtures(FIXTURES)
    total = sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file())
    print(f"wrote {FIXTURES} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
