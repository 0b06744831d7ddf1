"""Real-scale cost on paper: XLA's FLOPs and memory of one sampler step, compiled, never run.

One unguided and several guided steps (the shipped defaults: CFG, w = 2, unit-normalised
gradient, DDIM) at Stable Diffusion 1.5 512², SD 2.1 768² and SDXL 1024² shapes, with
abstract weights (`jax.eval_shape`: no memory, no values). Guided steps take the gradient
through the full VAE decoder or through a TAESD-sized tiny decoder (diffusers' AutoencoderTiny
defaults: 64 channels, blocks 3/3/3/1), with remat none / decoder / all (optionally with a
jax.checkpoint_policies policy, e.g. `decoder:dots_saveable`), in float32 or bfloat16 (compute
and weights, as `--config.dtype=bfloat16 --config.param_dtype=bfloat16` hold them).

  .venv/bin/python -m benchmarks.real_scale_cost --shapes sd15,sd21 --out /tmp/ltg_bench/cost.jsonl

SD 2.1 is modelled as SD 1.5's UNet at 768² with a 1024-wide text context: its linear
projections and per-block head counts change neither FLOPs nor activation sizes. SDXL is its
published base 1.0 UNet (tests/fixtures/sdxl_param_counts.json, whose parameter count the
tests check against diffusers') with SD's VAE layout at 1024², a 2048-wide context and the
text_time inputs. The signal is the shipped predictor's entropy on the decoded images resized
in-graph (a small CNN; its cost is in every guided row alike). Reported per image (batch 1).
Compile time on 2 CPU cores: about a minute per variant (SDXL: several).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks import common, gpu_sd15
from ltg_jax import diffusion, models, weights
from ltg_jax.models import layers

SHAPES = {
    "sd15": dict(gpu_sd15.SD15),
    "sd21": {**gpu_sd15.SD15, "latent": 96, "context_dim": 1024},
    "sdxl": {**gpu_sd15.SD15, "latent": 128, "context_dim": 2048},
}
SDXL_PUBLISHED = Path(__file__).resolve().parents[1] / "tests/fixtures/sdxl_param_counts.json"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# (name, grad_through, decoder); "unguided" has w = 0.
VARIANTS = {
    "unguided": ("unguided", "full"),
    "z0 full": ("z0", "full"),
    "z0 tiny": ("z0", "tiny"),
    "unet full": ("unet", "full"),
    "unet tiny": ("unet", "tiny"),
}


def model_configs(name: str) -> tuple[dict, dict]:
    """(unet, vae) configs of a shape: SD's layout, or SDXL base's published UNet."""
    unet_config, vae_config = common.tiny_sd_configs(**SHAPES[name])
    if name == "sdxl":
        unet_config = json.loads(SDXL_PUBLISHED.read_text())["unet_config"]
        vae_config["scaling_factor"] = 0.13025
    return unet_config, vae_config


def abstract_setup(name: str, dtype, remat: str) -> tuple[common.Setup, models.AutoencoderTiny]:
    """An SD-shaped setup whose params are ShapeDtypeStructs, and a TAESD-sized tiny decoder."""
    unet_config, vae_config = model_configs(name)
    unet = models.unet_from_config(unet_config, dtype=dtype, remat=remat)
    vae = models.vae_from_config(vae_config, dtype=dtype, remat=remat)
    pipe = weights.Pipeline(
        unet=unet,
        unet_params=stored(models.abstract_params(unet), dtype),
        vae=vae,
        vae_params=stored(models.abstract_params(vae), dtype),
        unet_config=unet_config,
        vae_config=vae_config,
        scheduler_config=dict(common.SD_SCHEDULER),
    )
    setup = common.setup_from_pipeline("abstract", pipe)
    tiny = models.vae_tiny_from_config({}, dtype=dtype)
    setup.params["diffusion"]["tiny_vae"] = stored(models.abstract_params(tiny), dtype)
    return setup, tiny


def stored(params, dtype):
    """Abstract params as `load_pipeline(param_dtype=dtype)` holds them (weights.storage_cast)."""
    cast = lambda x: jax.ShapeDtypeStruct(x.shape, dtype if x.ndim >= 2 else x.dtype)
    return jax.tree.map(cast, params)


def step_for(setup: common.Setup, tiny, variant: str):
    """common.make_step of `variant`, its guidance gradient through the chosen decoder."""
    grad_through, decoder = VARIANTS[variant]
    if decoder == "tiny":  # TAESD decodes diffusion latents directly (scaling_factor 1)
        tiny_models = diffusion.with_tiny_decoder(
            diffusion.conditional_models(setup.pipe), tiny, 1.0
        )
        signal = diffusion.predictor_signal(setup.bundle, common.SIGNAL)
        setup = dataclasses.replace(setup, models=diffusion.with_signal(tiny_models, signal))
    return common.make_step(setup, grad_through)


def compile_costs(setup: common.Setup, tiny, variant: str, batch: int = 1) -> dict:
    """FLOPs, bytes and XLA memory of one compiled step (never executed)."""
    h, w, c = setup.models.latent_shape
    dim = int(setup.pipe.unet_config["cross_attention_dim"])
    sds = jax.ShapeDtypeStruct
    cond = {
        "context": sds((batch, common.TEXT_LEN, dim), jnp.float32),
        "uncond": sds((batch, common.TEXT_LEN, dim), jnp.float32),
        "label": sds((batch,), jnp.int32),
    }
    unet = setup.pipe.unet
    if unet.addition_time_embed_dim:  # SDXL: pooled text embeds and the 6 time ids
        pooled = unet.addition_embed_dim - 6 * unet.addition_time_embed_dim
        cond["text_embeds"] = cond["uncond_text_embeds"] = sds((batch, pooled), jnp.float32)
        cond["time_ids"] = sds((batch, 6), jnp.float32)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
    args = (setup.params, sds((batch, h, w, c), jnp.float32), cond, keys, sds((), jnp.int32))
    tic = time.perf_counter()
    compiled = step_for(setup, tiny, variant).lower(*args).compile()
    seconds = time.perf_counter() - tic
    mem = compiled.memory_analysis()
    flops = common.cost(compiled)
    if layers.query_chunk(h * w, h * w) < h * w:
        # XLA counts a loop's body once: take the FLOPs from the same step with whole-sequence
        # attention (the same arithmetic), the memory from the blocked one that runs.
        with whole_sequence_attention():
            flops = common.cost(step_for(setup, tiny, variant).lower(*args).compile())
    return {
        **flops,
        "temp_gib": mem.temp_size_in_bytes / 2**30,
        "argument_gib": mem.argument_size_in_bytes / 2**30,
        "compile_s": seconds,
    }


@contextlib.contextmanager
def whole_sequence_attention():
    """Attention without query blocks while tracing (for XLA's FLOP count only)."""
    saved = layers.MAX_LOGITS_PER_BLOCK
    layers.MAX_LOGITS_PER_BLOCK = 2**62
    try:
        yield
    finally:
        layers.MAX_LOGITS_PER_BLOCK = saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="sd15,sd21")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--remats", default="none")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    for shape in a.shapes.split(","):
        for dtype in a.dtypes.split(","):
            for remat in a.remats.split(","):
                setup, tiny = abstract_setup(shape, DTYPES[dtype], remat)
                base = None
                for variant in a.variants.split(","):
                    row = {"shape": shape, "dtype": dtype, "remat": remat, "variant": variant}
                    row.update(compile_costs(setup, tiny, variant))
                    base = row["flops"] if variant == "unguided" else base
                    row["flops_vs_unguided"] = row["flops"] / base if base else None
                    print(json.dumps(row), flush=True)
                    if a.out:
                        a.out.parent.mkdir(parents=True, exist_ok=True)
                        with a.out.open("a") as f:
                            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
