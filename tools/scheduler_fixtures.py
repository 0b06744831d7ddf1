"""Golden DDIM and DPM-Solver++ fixtures from diffusers (PyTorch) for tests/test_schedulers.py.

Run where torch and diffusers are installed (the `reference` extra):
    python tools/scheduler_fixtures.py            # writes tests/fixtures/schedulers.{npz,json}
Tests read only the stored files, so they need no torch.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

SHAPE = (2, 4, 4, 3)  # [B, h, w, c]; the scheduler is elementwise so layout does not matter
ETA = 0.7

# Each case: a diffusers scheduler config plus the number of inference steps.
CASES: dict[str, dict[str, Any]] = {
    "sd_leading_eps": {
        "config": {
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
            "prediction_type": "epsilon",
            "timestep_spacing": "leading",
        },
        "num_inference_steps": 10,
    },
    "trailing_v": {
        "config": {
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
            "prediction_type": "v_prediction",
            "timestep_spacing": "trailing",
        },
        "num_inference_steps": 7,
    },
    "linspace_linear_eps": {
        "config": {
            "num_train_timesteps": 200,
            "beta_start": 0.0001,
            "beta_end": 0.02,
            "beta_schedule": "linear",
            "clip_sample": False,
            "set_alpha_to_one": True,
            "steps_offset": 0,
            "prediction_type": "epsilon",
            "timestep_spacing": "linspace",
        },
        "num_inference_steps": 9,
    },
    "cosine_leading_v_clip": {
        "config": {
            "num_train_timesteps": 100,
            "beta_schedule": "squaredcos_cap_v2",
            "clip_sample": True,
            "clip_sample_range": 1.0,
            "set_alpha_to_one": True,
            "steps_offset": 0,
            "prediction_type": "v_prediction",
            "timestep_spacing": "leading",
        },
        "num_inference_steps": 6,
    },
}


# DPM-Solver++(2M) cases: (short schedule, σ -> 0) and (long schedule, σ_min, heun, v).
DPM_CASES: dict[str, dict[str, Any]] = {
    "dpm_sd_linspace_eps": {
        "config": {
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "prediction_type": "epsilon",
            "solver_order": 2,
            "algorithm_type": "dpmsolver++",
            "lower_order_final": True,
        },
        "num_inference_steps": 8,
    },
    "dpm_trailing_v_heun_sigma_min": {
        "config": {
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "prediction_type": "v_prediction",
            "timestep_spacing": "trailing",
            "solver_type": "heun",
            "final_sigmas_type": "sigma_min",
        },
        "num_inference_steps": 16,
    },
    "dpm_leading_linear_eps": {
        "config": {
            "num_train_timesteps": 1000,
            "beta_schedule": "linear",
            "prediction_type": "epsilon",
            "timestep_spacing": "leading",
            "steps_offset": 1,
        },
        "num_inference_steps": 5,
    },
}


def _dpm_case_arrays(
    name: str, case: dict[str, Any], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per-step inputs and diffusers DPM-Solver++ outputs (history from the previous inputs)."""
    import torch
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(**case["config"])
    sched.set_timesteps(case["num_inference_steps"])
    steps = len(sched.timesteps)
    samples = rng.standard_normal((steps, *SHAPE)).astype(np.float32) * 2.0
    outputs = rng.standard_normal((steps, *SHAPE)).astype(np.float32)
    prev = []
    for i, t in enumerate(sched.timesteps):
        s, m = torch.from_numpy(samples[i]), torch.from_numpy(outputs[i])
        prev.append(sched.step(m, t, s).prev_sample.numpy())
    arrays = {
        "timesteps": sched.timesteps.numpy().astype(np.int64),
        "sigmas": sched.sigmas.numpy(),
        "samples": samples,
        "model_outputs": outputs,
        "prev": np.stack(prev),
    }
    return {f"{name}/{k}": v for k, v in arrays.items()}


def _case_arrays(
    name: str, case: dict[str, Any], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per-step inputs and diffusers DDIM outputs for one case."""
    import torch
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**case["config"])
    sched.set_timesteps(case["num_inference_steps"])
    steps = len(sched.timesteps)
    samples = rng.standard_normal((steps, *SHAPE)).astype(np.float32) * 2.0
    outputs = rng.standard_normal((steps, *SHAPE)).astype(np.float32)
    noise = rng.standard_normal((steps, *SHAPE)).astype(np.float32)
    prev_eta0, prev_eta, x0 = [], [], []
    for i, t in enumerate(sched.timesteps):
        s, m, n = (torch.from_numpy(a[i]) for a in (samples, outputs, noise))
        out0 = sched.step(m, t, s, eta=0.0)
        out1 = sched.step(m, t, s, eta=ETA, variance_noise=n)
        prev_eta0.append(out0.prev_sample.numpy())
        x0.append(out0.pred_original_sample.numpy())
        prev_eta.append(out1.prev_sample.numpy())
    add_t = rng.integers(0, case["config"]["num_train_timesteps"], size=SHAPE[0])
    x_clean = rng.standard_normal(SHAPE).astype(np.float32)
    x_noise = rng.standard_normal(SHAPE).astype(np.float32)
    tt = torch.from_numpy(add_t)
    noisy = sched.add_noise(torch.from_numpy(x_clean), torch.from_numpy(x_noise), tt)
    velocity = sched.get_velocity(torch.from_numpy(x_clean), torch.from_numpy(x_noise), tt)
    arrays = {
        "timesteps": sched.timesteps.numpy().astype(np.int64),
        "alphas_cumprod": sched.alphas_cumprod.numpy(),
        "samples": samples,
        "model_outputs": outputs,
        "noise": noise,
        "prev_eta0": np.stack(prev_eta0),
        "pred_x0": np.stack(x0),
        "prev_eta": np.stack(prev_eta),
        "add_t": add_t.astype(np.int64),
        "add_x0": x_clean,
        "add_noise": x_noise,
        "noisy": noisy.numpy(),
        "velocity": velocity.numpy(),
    }
    return {f"{name}/{k}": v for k, v in arrays.items()}


def make_scheduler_fixtures(out_dir: pathlib.Path) -> None:
    """Write `schedulers.npz` and `schedulers.json` (cases, eta) into out_dir."""
    import diffusers

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for name, case in CASES.items():
        arrays.update(_case_arrays(name, case, rng))
    for name, case in DPM_CASES.items():
        arrays.update(_dpm_case_arrays(name, case, rng))
    np.savez_compressed(out_dir / "schedulers.npz", **arrays)
    meta = {
        "diffusers_version": diffusers.__version__,
        "eta": ETA,
        "cases": CASES,
        "dpm_cases": DPM_CASES,
    }
    (out_dir / "schedulers.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    make_scheduler_fixtures(pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures")
