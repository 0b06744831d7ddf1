r"""Our jitted LTG sampler against the same loop in PyTorch eager (diffusers), same weights.

Both sides load the SAME diffusers-format folder (`common.ensure_folder`): ours with
`weights.load_pipeline`, PyTorch with diffusers' `UNet2DConditionModel` / `AutoencoderKL`
(+ the class embedding table). The predictor is the shipped ConvClassifier, its weights
ported into a small torch module. Each side runs the whole loop: initial noise, S DDIM steps
with CFG (both branches in one batch) and LTG (entropy of the decoded Tweedie estimate,
gradient w.r.t. z_t, unit-normalised, w = 2), final decode and score. Unguided: w = 0
(ours: `w_scale=0` of the same compiled program; torch: no autograd at all).
First, one step of each variant is checked to agree between the two sides.

  nice -n 0 .venv/bin/python -m benchmarks.vs_pytorch --settings embedded,tiny_sd \
      --batches 1,8,64 --num_steps 10 --out /tmp/ltg_bench/vs_pytorch.jsonl
  (--torch_compile also times torch.compile'd modules; --threads 2 for both sides)
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

# OpenMP threads that spin-wait crawl (100x) when another process holds a core of this shared
# machine; sleeping waits keep torch's 2 threads sane. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402

from benchmarks import common  # noqa: E402
from ltg_jax import predictor, sampling, schedulers  # noqa: E402

# ================================================================ the PyTorch peer


class TorchConvClassifier(torch.nn.Module):
    """Our ConvClassifier (flatten pooling) in torch, with the bundle's weights."""

    def __init__(self, module: predictor.ConvClassifier, params: dict):
        super().__init__()
        if module.pooling != "flatten":
            raise ValueError("only the flatten pooling is ported")
        self.convs, self.norms = torch.nn.ModuleList(), torch.nn.ModuleList()
        t = lambda a: torch.from_numpy(np.asarray(a, np.float32).copy())
        c_in = params["conv0"]["kernel"].shape[2]
        for i, width in enumerate(module.widths):
            conv = torch.nn.Conv2d(c_in, width, 3, padding=1)
            conv.weight.data = t(np.transpose(params[f"conv{i}"]["kernel"], (3, 2, 0, 1)))
            conv.bias.data = t(params[f"conv{i}"]["bias"])
            norm = torch.nn.GroupNorm(min(module.norm_groups, width), width, eps=1e-6)
            norm.weight.data, norm.bias.data = (
                t(params[f"norm{i}"]["scale"]),
                t(params[f"norm{i}"]["bias"]),
            )
            self.convs.append(conv)
            self.norms.append(norm)
            c_in = width
        self.features = torch.nn.Linear(*params["features"]["kernel"].shape)
        self.features.weight.data = t(np.transpose(params["features"]["kernel"]))
        self.features.bias.data = t(params["features"]["bias"])
        self.logits = torch.nn.Linear(*params["logits"]["kernel"].shape)
        self.logits.weight.data = t(np.transpose(params["logits"]["kernel"]))
        self.logits.bias.data = t(params["logits"]["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> logits [B, K]."""
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.avg_pool2d(F.silu(norm(conv(x))), 2)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # flax flattens NHWC
        return self.logits(F.silu(self.features(x)))


def torch_entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


class TorchLTG:
    """The LTG loop of `ltg_jax.guidance` / `sampling`, written with diffusers modules."""

    def __init__(self, folder: Path, setup: common.Setup, num_steps: int):
        self.unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
        self.vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
        for p in [*self.unet.parameters(), *self.vae.parameters()]:
            p.requires_grad_(False)
        self.scale = float(self.vae.config.scaling_factor)
        self.text = setup.text
        if not self.text:
            table = safetensors.numpy.load_file(
                str(folder / "class_embedder" / "diffusion_pytorch_model.safetensors")
            )["embedding.weight"]
            self.class_table = torch.from_numpy(table.copy())
            self.null_class = table.shape[0] - 1
        bundle = setup.bundle
        self.clf = TorchConvClassifier(bundle.predictor, bundle.params["predictor"]).eval()
        for p in self.clf.parameters():
            p.requires_grad_(False)
        self.pred_hw = tuple(bundle.metadata["input"]["shape"][:2])
        config = common.sampler_config(setup, "z0", num_steps)
        sched = schedulers.make_schedule(dict(config.scheduler), num_steps, config.solver)
        self.timesteps = [int(t) for t in np.asarray(sched.timesteps)]
        self.alpha_t = [float(a) for a in np.asarray(sched.alpha_t)]
        self.alpha_prev = [float(a) for a in np.asarray(sched.alpha_prev)]
        self.latent_shape = setup.models.latent_shape  # (h, w, c)
        self.decode_fn = lambda z: self.vae.decode(z).sample
        self.unet_fn = lambda z, t, ctx: self.unet(z, t, encoder_hidden_states=ctx).sample
        self.clf_fn = self.clf

    def compile(self) -> None:
        """torch.compile the three networks (inductor, static shapes)."""
        self.unet_fn = torch.compile(self.unet_fn, dynamic=False)
        self.decode_fn = torch.compile(self.decode_fn, dynamic=False)
        self.clf_fn = torch.compile(self.clf, dynamic=False)

    def contexts(self, cond: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(null context, context) [B, L, D] of our cond (class ids or the text dict)."""
        if self.text:
            as_t = lambda a: torch.from_numpy(np.array(a, np.float32))  # a writable copy
            return as_t(cond["uncond"]), as_t(cond["context"])
        labels = torch.from_numpy(np.asarray(cond, np.int64))
        return self.class_table[torch.full_like(labels, self.null_class)][:, None], (
            self.class_table[labels][:, None]
        )

    def eps(self, z: torch.Tensor, i: int, ctx2: torch.Tensor) -> torch.Tensor:
        """CFG-combined ε at step i, both branches in one batch of 2B."""
        t = torch.full((2 * z.shape[0],), self.timesteps[i], dtype=torch.long)
        out = self.unet_fn(torch.cat([z, z]), t, ctx2)
        u, c = out.chunk(2)
        return u + common.CFG_SCALE * (c - u)

    def signal(self, images: torch.Tensor) -> torch.Tensor:
        """Entropy of the predictor on decoded images [B, C, H, W] in [-1, 1]."""
        x = images.mean(1, keepdim=True) if images.shape[1] != 1 else images
        if tuple(x.shape[2:]) != self.pred_hw:
            x = F.interpolate(x, size=self.pred_hw, mode="bilinear", antialias=True)
        return torch_entropy(self.clf_fn(x))

    def step(self, z: torch.Tensor, i: int, ctx2: torch.Tensor, variant: str, w: float):
        """One DDIM step (η = 0) with LTG: z_t [B, c, h, w] -> z_{t-1}."""
        a, a_prev = self.alpha_t[i], self.alpha_prev[i]
        sa, s1a = math.sqrt(a), math.sqrt(1 - a)
        if variant == "unguided" or w == 0:
            with torch.no_grad():
                eps_hat = self.eps(z, i, ctx2)
        else:
            zg = z.detach().requires_grad_(True)
            if variant == "z0":
                with torch.no_grad():
                    eps = self.eps(z, i, ctx2)
            else:
                eps = self.eps(zg, i, ctx2)
            x0 = (zg - s1a * eps) / sa
            sig = self.signal(self.decode_fn(x0 / self.scale))
            (g,) = torch.autograd.grad(sig.sum(), zg)
            norm = g.flatten(1).norm(dim=1).clamp_min(torch.finfo(g.dtype).tiny)
            g = g / norm[:, None, None, None]  # normalise = "unit"
            eps_hat = eps.detach() - w * s1a * g
        with torch.no_grad():
            x0 = (z - s1a * eps_hat) / sa
            return math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps_hat

    def sample(self, cond: Any, variant: str, w: float = common.GUIDANCE_W, seed: int = 0):
        """The whole loop: noise, steps, final decode + score -> (images, signals)."""
        null, ctx = self.contexts(cond)
        ctx2 = torch.cat([null, ctx])
        h, w_, c = self.latent_shape
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn((ctx.shape[0], c, h, w_), generator=gen)
        for i in range(len(self.timesteps)):
            z = self.step(z, i, ctx2, variant, w)
        with torch.no_grad():
            images = self.decode_fn(z / self.scale)
            return images, self.signal(images)


# ================================================================ agreement check


def check_agreement(setup: common.Setup, peer: TorchLTG, batch: int = 2) -> dict[str, float]:
    """Max |Δz_{t-1}| / max |z_{t-1}| of one step of each variant, ours vs torch."""
    params, z, cond, keys, _ = common.step_inputs(setup, batch)
    steps = len(peer.timesteps)
    i = jnp.asarray(steps // 2, jnp.int32)
    make_step = lambda variant: common.make_step(setup, variant, steps)
    null, ctx = peer.contexts(jax.tree.map(np.asarray, cond))
    ctx2 = torch.cat([null, ctx])
    z_t = torch.from_numpy(np.transpose(np.asarray(z), (0, 3, 1, 2)).copy())
    out = {}
    for variant in common.VARIANTS:
        ours = np.asarray(make_step(variant)(params, z, cond, keys, i)[0])
        theirs = peer.step(z_t, int(i), ctx2, variant, common.GUIDANCE_W).numpy()
        theirs = np.transpose(theirs, (0, 2, 3, 1))
        out[variant] = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(ours)))
    # The guidance term alone (ε̂ − ε): how well the two gradients agree.
    base = np.asarray(make_step("unguided")(params, z, cond, keys, i)[0])
    for variant in ("z0", "unet"):
        ours = np.asarray(make_step(variant)(params, z, cond, keys, i)[0]) - base
        t_unguided = peer.step(z_t, int(i), ctx2, "unguided", 0.0)
        theirs = (peer.step(z_t, int(i), ctx2, variant, common.GUIDANCE_W) - t_unguided).numpy()
        theirs = np.transpose(theirs, (0, 2, 3, 1))
        out[f"{variant}_guidance_term"] = float(
            np.max(np.abs(ours - theirs)) / max(np.max(np.abs(ours)), 1e-30)
        )
    return out


# ================================================================ benchmark


def loop_fns(sampler, args: tuple, peer, compiled_peer, variant: str) -> dict:
    """The whole-loop callables to time: ours (w_scale 0 / 1) and torch (eager, compiled)."""
    cond = args[2]
    fns = {
        "ours_unguided": lambda: sampler(*args, 0.0),
        f"ours_{variant}": lambda: sampler(*args, 1.0),
        "torch_unguided": lambda: peer.sample(cond, "unguided"),
        f"torch_{variant}": lambda: peer.sample(cond, variant),
    }
    if compiled_peer is not None:
        fns["torch.compile_unguided"] = lambda: compiled_peer.sample(cond, "unguided")
        fns[f"torch.compile_{variant}"] = lambda: compiled_peer.sample(cond, variant)
    return fns


def run(
    setting: str,
    batches: list[int],
    num_steps: int,
    variant: str,
    budget_s: float,
    torch_compile: bool,
    out: Path | None,
) -> list[dict]:
    """Images/s of ours and torch (eager, optionally compiled), unguided and LTG, per batch."""
    folder = common.ensure_folder(setting)
    setup = common.load_setup(setting, folder)
    peer = TorchLTG(folder, setup, num_steps)
    agreement = check_agreement(setup, peer)
    common.write_jsonl(out, {"bench": "agreement", "setting": setting, "rel_max_diff": agreement})
    compiled_peer = None
    if torch_compile:
        compiled_peer = TorchLTG(folder, setup, num_steps)
        compiled_peer.compile()
    sampler = sampling.make_sampler(common.sampler_config(setup, variant, num_steps), setup.models)
    params = jax.device_put(setup.params)
    rng = jax.random.key(0)
    records = []
    for batch in batches:
        idx = np.arange(batch, dtype=np.int32)
        cond = common.make_cond(setup, batch)
        t0 = time.perf_counter()
        common.block(sampler(params, idx, cond, rng, 1.0))
        ours_first = time.perf_counter() - t0
        torch_compile_first = None
        if compiled_peer is not None:
            t0 = time.perf_counter()
            compiled_peer.sample(cond, variant)
            compiled_peer.sample(cond, "unguided")
            torch_compile_first = time.perf_counter() - t0
        fns = loop_fns(sampler, (params, idx, cond, rng), peer, compiled_peer, variant)
        times = common.interleaved_times(fns, min_reps=2, max_reps=10, budget_s=budget_s)
        med = {k: common.median(v) for k, v in times.items()}
        ips = {k: batch / v for k, v in med.items()}
        rec = {
            "bench": "vs_pytorch",
            "setting": setting,
            "batch": batch,
            "num_steps": num_steps,
            "variant": variant,
            "images_per_s": ips,
            "loop_s": med,
            "reps": {k: len(v) for k, v in times.items()},
            "speedup_unguided": med["torch_unguided"] / med["ours_unguided"],
            f"speedup_{variant}": med[f"torch_{variant}"] / med[f"ours_{variant}"],
            "ours_first_call_s": ours_first,
            "torch_compile_first_calls_s": torch_compile_first,
        }
        common.write_jsonl(out, rec)
        records.append(rec)
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="embedded,tiny_sd")
    p.add_argument("--batches", default="1,8,64")
    p.add_argument("--num_steps", type=int, default=10)
    p.add_argument("--variant", default="z0", choices=("z0", "unet"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget_s", type=float, default=30.0, help="timing seconds per batch")
    p.add_argument("--torch_compile", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    common.write_jsonl(
        a.out,
        {
            "bench": "machine",
            **common.machine(),
            "torch_threads": torch.get_num_threads(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        },
    )
    jnp.zeros(()).block_until_ready()
    records = []
    for setting in a.settings.split(","):
        batches = [int(b) for b in a.batches.split(",")]
        records += run(setting, batches, a.num_steps, a.variant, a.budget_s, a.torch_compile, a.out)
    v = a.variant
    rows = []
    for r in records:
        ips = r["images_per_s"]
        row = [
            r["setting"],
            r["batch"],
            r["num_steps"],
            f"{ips['ours_unguided']:.3g}",
            f"{ips['torch_unguided']:.3g}",
            f"{r['speedup_unguided']:.2f}",
            f"{ips[f'ours_{v}']:.3g}",
            f"{ips[f'torch_{v}']:.3g}",
            f"{r[f'speedup_{v}']:.2f}",
        ]
        if a.torch_compile:
            row += [f"{ips['torch.compile_unguided']:.3g}", f"{ips[f'torch.compile_{v}']:.3g}"]
        rows.append(row)
    header = ["setting", "batch", "steps", "ours ung img/s", "torch ung img/s", "ours/torch ung",
              f"ours LTG-{v} img/s", f"torch LTG-{v} img/s", f"ours/torch LTG-{v}"]  # fmt: skip
    if a.torch_compile:
        header += ["torch.compile ung img/s", f"torch.compile LTG-{v} img/s"]
    print(common.markdown_table(header, rows))


if __name__ == "__main__":
    main()
