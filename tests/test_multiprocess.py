"""Several processes for real: jax.distributed on localhost with gloo CPU collectives.

Two processes of one CPU device each must write what one process with two (fake) CPU devices
writes, byte for byte: the global batch, its sharding and every reduction are the same; only
the processes differ. Sampling, the whole mining loop (fine-tuning on the mesh included) and
every trainer (predictor, epistemic heads, VAE, LDM) are checked. (Across device counts the
images agree up to float rounding, ±1 grey level in a few pixels: see tests/test_sampling.py.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import test_mining

from ltg_jax import checkpointing

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:the load_module")]
TIMEOUT_S = 300
models = test_mining.models  # the fixture: tiny models with Fashion-MNIST's class names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env() -> dict[str, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    env.pop("XLA_FLAGS", None)
    return env


def run_processes(cmd: list[str], count: int, log: Path) -> None:
    """`cmd` as `count` jax.distributed processes on localhost; fails on error or timeout."""
    env = {**base_env(), "LTG_DISTRIBUTED": "1", "JAX_NUM_PROCESSES": str(count),
           "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}"}  # fmt: skip
    logs = [log.with_suffix(f".{i}.txt").open("w") for i in range(count)]
    procs = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**env, "JAX_PROCESS_ID": str(i)},
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for i in range(count)
    ]
    try:
        codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            p.kill()
    texts = [log.with_suffix(f".{i}.txt").read_text()[-3000:] for i in range(count)]
    assert codes == [0] * count, texts


def run_one_process(cmd: list[str], devices: int, log: Path) -> None:
    env = {**base_env(), "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)  # fmt: skip
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]


def run_split(split: str, cmd: list[str], log: Path) -> None:
    """`cmd` on two devices: as two processes of one ('two') or one process of two ('one')."""
    if split == "two":
        run_processes(cmd, 2, log)
    else:
        run_one_process(cmd, 2, log.with_suffix(".txt"))


def same_files(a: Path, b: Path, skip: tuple[str, ...] = ()) -> None:
    """Every file under `a` is under `b` with the same bytes, and no other file is there."""
    files = lambda root: sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in skip
    )
    assert files(a) == files(b)
    for name in files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_sample_ltg_on_two_processes_equals_one_process(models, tmp_path):
    def cmd(workdir):
        return [sys.executable, "-m", "sample.ltg", "--config", "ltg:test",
                f"--workdir={workdir}", f"--config.pipeline={models['pipeline']}",
                f"--config.predictor={models['predictor']}", "--config.classes=1,4",
                "--config.samples_per_class=3", "--config.batch_size=2"]  # fmt: skip

    for w in ("one", "two"):
        run_split(w, cmd(tmp_path / w), tmp_path / w)
    same_files(tmp_path / "one" / "data", tmp_path / "two" / "data")
    same_files(tmp_path / "one" / "contact_sheets", tmp_path / "two" / "contact_sheets")


def without(obj, keys: set[str]):
    """A JSON object less its run-specific keys (timings, absolute paths), at any depth."""
    if isinstance(obj, dict):
        return {k: without(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [without(v, keys) for v in obj]
    return obj


RUN_SPECIFIC = {"wall_time_s", "stage_wall_time_s", "stage_wall_time_total_s",
                "stages_run_this_time", "seconds_this_run", "root",
                "generation_images_per_s"}  # fmt: skip


def test_mining_loop_on_two_processes_equals_one_process(models, tmp_path):
    """Generation, review, fine-tuning on the mesh (every arm and seed) and the report."""

    def cmd(workdir):
        return [sys.executable, "-m", "sample.mine", "--config", "mine:test",
                f"--workdir={workdir}", f"--config.pipeline={models['pipeline']}",
                f"--config.predictor={models['predictor']}",
                f"--config.oracle={models['oracle']}"]  # fmt: skip

    for w in ("one", "two"):
        run_split(w, cmd(tmp_path / w), tmp_path / w)
    one, two = tmp_path / "one", tmp_path / "two"
    for arm in ("unguided", "ltg"):
        same_files(one / "synthetic" / arm / "data", two / "synthetic" / arm / "data")
    evals = sorted(p.relative_to(one) for p in one.rglob("eval.json"))
    assert len(evals) == 9  # 3 arms x 3 seeds
    for name in [*evals, Path("report.json")]:
        a, b = (json.loads((w / name).read_text()) for w in (one, two))
        assert without(a, RUN_SPECIFIC) == without(b, RUN_SPECIFIC), name


def equal_params(a: Path, b: Path) -> None:
    """The latest checkpoints of two workdirs (saved on 2 devices) hold the same arrays."""
    (state_a, step_a), (state_b, step_b) = (checkpointing.restore_latest(w) for w in (a, b))
    assert step_a == step_b
    jax.tree.map(np.testing.assert_array_equal, state_a, state_b)


def same_json(a: Path, b: Path, skip: set[str] = RUN_SPECIFIC) -> None:
    assert without(json.loads(a.read_text()), skip) == without(json.loads(b.read_text()), skip), a


def test_predictor_and_heads_training_on_two_processes_equal_one_process(tmp_path):
    """Each process loads its rows of the same global batches; the params come out equal."""
    predictor_cmd = [sys.executable, "-m", "train.predictor", "--config", "predictor:test"]
    heads_cmd = [sys.executable, "-m", "train.epistemic_head", "--config", "epistemic_head:test"]
    for w in ("one", "two"):
        run_split(w, [*predictor_cmd, f"--workdir={tmp_path / w / 'predictor'}"], tmp_path / w)
        run_split(w, [*heads_cmd, f"--workdir={tmp_path / w / 'heads'}",
                      f"--config.predictor_workdir={tmp_path / w / 'predictor'}"],
                  tmp_path / f"{w}_heads")  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    for job in ("predictor", "heads"):
        equal_params(one / job, two / job)
    for name in ("eval_test.json", "eval_validation.json"):
        same_json(one / "predictor" / name, two / "predictor" / name,
                  RUN_SPECIFIC | {"train_seconds_this_run"})  # fmt: skip
    same_json(one / "heads" / "heads_summary.json", two / "heads" / "heads_summary.json")


def test_vae_and_ldm_training_on_two_processes_equal_one_process(tmp_path):
    """The embedded default's trainers: same checkpoints, same exported pipeline folder."""
    vae_cmd = [sys.executable, "-m", "train.vae", "--config", "vae:test"]
    ldm_cmd = [sys.executable, "-m", "train.ldm", "--config", "ldm:test"]
    for w in ("one", "two"):
        run_split(w, [*vae_cmd, f"--workdir={tmp_path / w / 'vae'}"], tmp_path / w)
        run_split(w, [*ldm_cmd, f"--workdir={tmp_path / w / 'ldm'}",
                      f"--config.vae_workdir={tmp_path / w / 'vae'}"],
                  tmp_path / f"{w}_ldm")  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    for job in ("vae", "ldm"):
        equal_params(one / job, two / job)
    same_json(one / "vae" / "vae_config.json", two / "vae" / "vae_config.json")
    same_files(one / "ldm" / "pipeline", two / "ldm" / "pipeline")
