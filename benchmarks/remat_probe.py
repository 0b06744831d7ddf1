r"""Where the memory of backprop through the VAE decoder goes, and what remat buys.

XLA's memory analysis (temp bytes) of grad_z Σ D(z) for the tiny_sd f=8 decoder at one batch:
  none        no remat
  decoder     the library's remat="decoder" (nn.remat around each resnet, attention and the
              full-resolution output tail of the decoder)
  forward     the forward pass alone (no gradient): what any remat must still hold

  .venv/bin/python -m benchmarks.remat_probe --batch 64
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks import common
from ltg_jax import models

MODES = ("forward", "none", "decoder")


def decoder_memory(mode: str, batch: int) -> dict:
    """XLA temp MiB and GFLOPs of the decoder's forward or gradient under a remat mode."""
    setup = common.load_setup("tiny_sd", remat="none" if mode == "forward" else mode)
    vae, params = setup.pipe.vae, setup.params["diffusion"]["vae"]
    scale = float(setup.pipe.vae_config["scaling_factor"])
    h, w, c = setup.models.latent_shape
    z = jnp.zeros((batch, h, w, c), jnp.float32)
    decode = lambda z, p: jnp.sum(models.decode_latents(vae, p, z, scale))
    fn = jax.jit(decode if mode == "forward" else jax.grad(decode))
    compiled = fn.lower(z, params).compile()
    return {
        "bench": "remat_probe",
        "mode": mode,
        "batch": batch,
        "temp_mib": common.memory(compiled)["temp"] / 2**20,
        "gflops": common.cost(compiled)["flops"] / 1e9,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    a = p.parse_args()
    rows = []
    for mode in MODES:
        rec = decoder_memory(mode, a.batch)
        common.write_jsonl(None, rec)
        rows.append([mode, a.batch, f"{rec['temp_mib']:.0f}", f"{rec['gflops']:.3g}"])
    print(common.markdown_table(["mode", "batch", "XLA temp MiB", "GFLOP"], rows))


if __name__ == "__main__":
    main()
