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
    tests/fixtures/tiny_sd_hub/   SD 1.x folder laid out like a hub download: configs with only
                                  the keys SD 1.5's hub configs have (no VAE scaling_factor),
                                  legacy VAE attention names, PNDM scheduler config, and the
                                  tokenizer as transformers 5 saves it (tokenizer.json only)
    tests/fixtures/tiny_sd_hub_images.npz  diffusers StableDiffusionPipeline + DDIMScheduler
                                  images ([0, 1], NHWC) from our sampler's initial latents
    tests/fixtures/config_defaults.json    diffusers/transformers constructor defaults
    tests/fixtures/tiny_taesd/    a random AutoencoderTiny (TAESD layout, 8 channels) and
    tests/fixtures/tiny_taesd_outputs.npz  its decode/encode outputs (NHWC); only these two:
                                  `tools/make_fixtures.py taesd`
    tests/fixtures/tiny_sdxl/     SDXL-shaped folder (StableDiffusionXLPipeline.save_pretrained:
                                  two CLIP encoders 16 + 24 wide, text_time UNet, Euler
                                  scheduler with SDXL base's config), float32, and
    tests/fixtures/tiny_sdxl_outputs.npz   its text encoder/encode_prompt/UNet outputs and
                                  pipeline images (DDIM, our sampler's initial latents), and
    tests/fixtures/sdxl_param_counts.json  SDXL base 1.0 configs + parameter counts (meta
                                  device); only these three: `tools/make_fixtures.py sdxl`
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


# The keys SD 1.5's hub configs carry (written by diffusers 0.6): everything else is defaulted.
HUB_UNET_KEYS = (
    "_class_name", "act_fn", "attention_head_dim", "block_out_channels", "center_input_sample",
    "cross_attention_dim", "down_block_types", "downsample_padding", "flip_sin_to_cos",
    "freq_shift", "in_channels", "layers_per_block", "mid_block_scale_factor", "norm_eps",
    "norm_num_groups", "out_channels", "sample_size", "up_block_types",
)  # fmt: skip
HUB_VAE_KEYS = (
    "_class_name", "act_fn", "block_out_channels", "down_block_types", "in_channels",
    "latent_channels", "layers_per_block", "norm_num_groups", "out_channels", "sample_size",
    "up_block_types",
)  # fmt: skip
HUB_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
# (prompts, height or None, guidance_scale, steps) of each golden image set.
HUB_CASES = {
    "default": (["a photo of a cat", "The dog, on a MAT!"], None, 3.0, 4),
    "h24w32": (["a photo of a dog", "the cat"], (24, 32), 5.0, 3),
}


def _keep_keys(path: pathlib.Path, keys: tuple[str, ...], version: str = "0.6.0") -> None:
    cfg = json.loads(path.read_text())
    cfg = {k: v for k, v in cfg.items() if k in keys} | {"_diffusers_version": version}
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def build_hub_folder(folder: pathlib.Path, seed: int = 2) -> None:
    """A tiny SD 1.x folder in the layout of an old hub download (see the module docstring)."""
    build_folder("sd1", folder, seed)
    to_hub_layout(folder)


def to_hub_layout(folder: pathlib.Path) -> None:
    """Rewrite a save_pretrained SD 1.x folder the way SD 1.5's hub download is laid out."""
    from safetensors.numpy import load_file, save_file
    from transformers import CLIPTokenizer

    _keep_keys(folder / "unet" / "config.json", HUB_UNET_KEYS)
    _keep_keys(folder / "vae" / "config.json", HUB_VAE_KEYS)
    vae_file = folder / "vae" / "diffusion_pytorch_model.safetensors"
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for key, value in load_file(vae_file).items():
        for new, old in legacy.items():
            if ".attentions." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        renamed[key] = value
    save_file(renamed, vae_file, metadata={"format": "pt"})
    shutil.rmtree(folder / "scheduler")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(HUB_SCHEDULER, indent=2, sort_keys=True) + "\n"
    )
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    shutil.rmtree(folder / "tokenizer")
    tokenizer.save_pretrained(folder / "tokenizer")  # transformers 5: tokenizer.json only
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "PNDMScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def hub_images(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """diffusers' images for HUB_CASES, started from our sampler's initial latents (seed 0)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    out = {}
    for name, (prompts, size, cfg_scale, steps) in HUB_CASES.items():
        h, w = size or (16, 16)
        out[name] = pipeline_images(pipe, prompts, h, w, cfg_scale, steps)
    return out


def pipeline_images(pipe, prompts: list[str], h: int, w: int, cfg_scale: float, steps: int):
    """A diffusers pipeline's images ([0, 1], NHWC) from our sampler's initial latents (seed 0)."""
    import jax
    import torch

    from ltg_jax import sampling

    shape = (h // 2, w // 2, 4)
    z = sampling.initial_latents(jax.random.key(0), np.arange(len(prompts)), shape)
    latents = torch.from_numpy(np.asarray(z).transpose(0, 3, 1, 2).copy())
    images = pipe(
        prompts, height=h, width=w, num_inference_steps=steps, guidance_scale=cfg_scale,
        latents=latents, output_type="np", eta=0.0,
    ).images  # fmt: skip
    return np.asarray(images, np.float32)


def config_defaults() -> dict[str, dict]:
    """The constructor defaults our models/defaults.py must equal (JSON-able)."""
    import inspect

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    def init_defaults(cls):
        params = inspect.signature(cls.__init__).parameters.items()
        return {k: p.default for k, p in params if p.default is not inspect.Parameter.empty}

    clip = CLIPTextConfig().to_dict()
    return json.loads(json.dumps({
        "unet": init_defaults(UNet2DConditionModel),
        "vae": init_defaults(AutoencoderKL),
        "text_encoder": clip,
        "ddim": init_defaults(DDIMScheduler),
    }, default=str))  # fmt: skip


def make_hub_fixtures() -> None:
    """tiny_sd_hub/, its golden images and config_defaults.json."""
    folder = FIXTURES / "tiny_sd_hub"
    build_hub_folder(folder)
    np.savez_compressed(FIXTURES / "tiny_sd_hub_images.npz", **hub_images(folder))
    (FIXTURES / "config_defaults.json").write_text(
        json.dumps(config_defaults(), indent=2, sort_keys=True) + "\n"
    )


TAESD_CONFIG = {
    "encoder_block_out_channels": [8, 8, 8, 8],
    "decoder_block_out_channels": [8, 8, 8, 8],
    "num_encoder_blocks": [1, 2, 2, 2],
    "num_decoder_blocks": [2, 2, 2, 1],
    "latent_channels": 4,
}


def make_taesd_fixture(seed: int = 3) -> None:
    """tiny_taesd/ (diffusers AutoencoderTiny, random) and its outputs on fixed inputs."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    model = AutoencoderTiny(**TAESD_CONFIG).eval()
    with torch.no_grad():  # larger random weights than the init, so every layer matters
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    folder = FIXTURES / "tiny_taesd"
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True)
    model = AutoencoderTiny.from_pretrained(folder).eval()
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((2, 4, 4, 4)).astype(np.float32) * 2.0  # NHWC
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    nchw = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
    nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1).astype(np.float32)
    with torch.no_grad():
        decoded = nhwc(model.decode(nchw(latents)).sample)
        encoded = nhwc(model.encode(nchw(images)).latents)
    np.savez_compressed(
        FIXTURES / "tiny_taesd_outputs.npz",
        latents=latents, decoded=decoded, images=images, encoded=encoded,
    )  # fmt: skip


# SDXL base 1.0's published scheduler config (an EulerDiscreteScheduler config that also carries
# the DDIM/PNDM keys, so DDIMScheduler.from_config(...) of it has clip_sample False etc.).
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}
# Tiny SDXL-structured UNet: no attention at the top level, 2 transformer layers at the bottom,
# context = concat(text_encoder 16, text_encoder_2 24), added "text_time" conditioning with
# 6 time ids x 8 + text_encoder_2's 12-dim projection.
SDXL_TINY_UNET = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [8, 16],
    "layers_per_block": 2,
    "norm_num_groups": 4,
    "attention_head_dim": [2, 4],
    "transformer_layers_per_block": [1, 2],
    "use_linear_projection": True,
    "cross_attention_dim": 40,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 60,
}
# Published SDXL base 1.0 shapes, for parameter counts (constructor kwargs, JSON-able).
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SDXL_TEXT_ENCODER = {  # CLIP ViT-L/14 text tower (CLIPTextModel)
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}
SDXL_TEXT_ENCODER_2 = {  # OpenCLIP ViT-bigG/14 text tower (CLIPTextModelWithProjection)
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 1280,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}
# (prompts, height, width, guidance_scale, steps) of each golden SDXL image set.
SDXL_CASES = {
    "default": (PROMPTS, 16, 16, 5.0, 3),
    "h16w24": (["a photo of a dog", "the cat"], 16, 24, 3.0, 2),
}


def build_sdxl_folder(folder: pathlib.Path, seed: int = 4) -> None:
    """tiny_sdxl/: a random StableDiffusionXLPipeline saved with save_pretrained (float32)."""
    import tempfile

    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SDXL_TINY_UNET)
    vae = AutoencoderKL(**(vae_config() | {"scaling_factor": 0.13025, "force_upcast": True}))
    text = CLIPTextModel(CLIPTextConfig(**(text_config("sd1") | {"num_hidden_layers": 3})))
    text_2_cfg = text_config("sd2") | {
        "hidden_size": 24,
        "intermediate_size": 48,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "projection_dim": 12,
    }
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_2_cfg))
    with torch.no_grad():  # as build_folder: every tensor must matter
        for model in (unet, vae, text, text_2):
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    scheduler = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        write_tokenizer(tmp / "tokenizer", pad_token=EOS)
        write_tokenizer(tmp / "tokenizer_2", pad_token="!")
        tokenizer = CLIPTokenizer.from_pretrained(tmp / "tokenizer")
        tokenizer_2 = CLIPTokenizer.from_pretrained(tmp / "tokenizer_2")
    pipe = StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text.eval(),
        text_encoder_2=text_2.eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet.eval(),
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    shutil.rmtree(folder, ignore_errors=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    # transformers 5 saves tokenizer.json only; ship vocab.json/merges.txt like the SD fixtures.
    for name, pad in (("tokenizer", EOS), ("tokenizer_2", "!")):
        shutil.rmtree(folder / name)
        write_tokenizer(folder / name, pad_token=pad)


def sdxl_outputs(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """Golden SDXL outputs of the pipeline reloaded from `folder` (NHWC, float32)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.force_zeros_for_empty_prompt
    models = (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2)
    assert all(m.dtype == torch.float32 for m in models)
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1).astype(np.float32)
    f32 = lambda t: t.detach().numpy().astype(np.float32)
    out: dict[str, np.ndarray] = {"prompts": np.array(PROMPTS)}
    with torch.no_grad():
        for i, (tok, te) in enumerate(
            ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)), 1
        ):
            ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids
            out[f"ids_{i}"] = np.asarray(ids, np.int32)
            res = te(torch.tensor(ids, dtype=torch.long), output_hidden_states=True)
            out[f"te{i}_penultimate"] = f32(res.hidden_states[-2])
            if i == 1:
                out["te1_pooled"] = f32(res.pooler_output)
            else:
                out["te2_text_embeds"] = f32(res.text_embeds)
        kw = dict(device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True)
        pe, npe, ppe, nppe = pipe.encode_prompt(prompt=PROMPTS, **kw)
        assert not npe.any() and not nppe.any(), "force_zeros_for_empty_prompt: zero negatives"
        out["prompt_embeds"], out["negative_prompt_embeds"] = f32(pe), f32(npe)
        out["pooled_prompt_embeds"], out["negative_pooled_prompt_embeds"] = f32(ppe), f32(nppe)
        _, npe, _, nppe = pipe.encode_prompt(prompt=PROMPTS, negative_prompt="blurry", **kw)
        assert npe.any() and nppe.any()
        out["negative_blurry_prompt_embeds"] = f32(npe)
        out["negative_blurry_pooled_prompt_embeds"] = f32(nppe)

        rng = np.random.default_rng(0)
        unet_in = {
            "latents": rng.standard_normal((2, 8, 8, 4)).astype(np.float32),
            "timesteps": np.array([3, 981], np.int32),
            "context": rng.standard_normal((2, 7, 40)).astype(np.float32),
            "text_embeds": rng.standard_normal((2, 12)).astype(np.float32),
            "time_ids": np.array([[16, 16, 0, 0, 16, 16], [24, 32, 2, 4, 16, 16]], np.float32),
        }
        eps = pipe.unet(
            nchw(unet_in["latents"]),
            torch.from_numpy(unet_in["timesteps"]).long(),
            encoder_hidden_states=torch.from_numpy(unet_in["context"]),
            added_cond_kwargs={
                "text_embeds": torch.from_numpy(unet_in["text_embeds"]),
                "time_ids": torch.from_numpy(unet_in["time_ids"]),
            },
        ).sample
        out |= {f"unet.{k}": v for k, v in unet_in.items()}
        out["unet.eps"] = nhwc(eps)

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert not pipe.scheduler.config.clip_sample and not pipe.scheduler.config.set_alpha_to_one
    for name, (prompts, h, w, cfg_scale, steps) in SDXL_CASES.items():
        out[f"images.{name}"] = pipeline_images(pipe, prompts, h, w, cfg_scale, steps)
        # original_size + crops_coords_top_left + target_size, the pipeline's defaults
        out[f"time_ids.{name}"] = np.array([h, w, 0, 0, h, w], np.float32)
    return out


def sdxl_param_counts() -> dict:
    """Published SDXL base 1.0 configs and their diffusers/transformers parameter counts."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    count = lambda m: sum(p.numel() for p in m.parameters())
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
        text = CLIPTextModel(CLIPTextConfig(**SDXL_TEXT_ENCODER))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_ENCODER_2))
    return {
        "unet_config": SDXL_UNET,
        "unet_params": count(unet),
        # As the hub's config.json files: `architectures` names the class.
        "text_encoder_config": {**SDXL_TEXT_ENCODER, "architectures": ["CLIPTextModel"]},
        "text_encoder_params": count(text),
        "text_encoder_2_config": {
            **SDXL_TEXT_ENCODER_2,
            "architectures": ["CLIPTextModelWithProjection"],
        },
        "text_encoder_2_params": count(text_2),
    }


def make_sdxl_fixtures() -> None:
    """tiny_sdxl/, tiny_sdxl_outputs.npz and sdxl_param_counts.json."""
    folder = FIXTURES / "tiny_sdxl"
    build_sdxl_folder(folder)
    arrays = sdxl_outputs(folder)
    for k, v in arrays.items():
        if v.dtype.kind == "f":
            assert np.isfinite(v).all(), k
    np.savez_compressed(FIXTURES / "tiny_sdxl_outputs.npz", **arrays)
    (FIXTURES / "sdxl_param_counts.json").write_text(
        json.dumps(sdxl_param_counts(), indent=2) + "\n"
    )


def main() -> None:
    import torch

    torch.set_num_threads(1)
    if sys.argv[1:] == ["taesd"]:
        make_taesd_fixture()
        return
    if sys.argv[1:] == ["sdxl"]:
        make_sdxl_fixtures()
        return
    inputs = fixed_inputs()
    arrays = {f"inputs.{k}": v for k, v in inputs.items()}
    arrays["prompts"] = np.array(PROMPTS)
    for seed, variant in enumerate(("sd1", "sd2")):
        folder = FIXTURES / ("tiny_sd" if variant == "sd1" else "tiny_sd2")
        build_folder(variant, folder, seed)
        for k, v in reference_outputs(folder, inputs).items():
            arrays[f"{variant}.{k}"] = v
    np.savez_compressed(FIXTURES / "tiny_sd_outputs.npz", **arrays)
    make_hub_fixtures()
    try:  # scheduler golden outputs (tools/scheduler_fixtures.py, another engineer's module)
        sys.path.insert(0, str(ROOT / "tools"))
        from scheduler_fixtures import make_scheduler_fixtures
    except ImportError as e:
        print(f"scheduler fixtures not written ({e})")
    else:
        make_scheduler_fixtures(FIXTURES)
    make_taesd_fixture()
    total = sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file())
    print(f"wrote {FIXTURES} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
