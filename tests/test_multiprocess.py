"""Several processes for real: jax.distributed on localhost with gloo CPU collectives.

Two processes of one CPU device each must write byte for byte what one process with two
(fake) CPU devices writes: the global batch, its sharding and every reduction are the same;
only the processes differ. (Across device counts the images agree up to float rounding,
±1 grey level in a few pixels: see tests/test_sampling.py.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_ltg_sampling import tiny_bundle, tiny_pipeline
from test_mining import fashion_named

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:the load_module")]
TIMEOUT_S = 300


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


def same_files(a: Path, b: Path, skip: tuple[str, ...] = ()) -> None:
    """Every file under `a` is under `b` with the same bytes, and no other file is there."""
    files = lambda root: sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in skip
    )
    assert files(a) == files(b)
    for name in files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp_models")
    return {
        "pipeline": tiny_pipeline(root / "pipeline"),
        "predictor": fashion_named(tiny_bundle(root / "bundle.msgpack")),
        "oracle": fashion_named(tiny_bundle(root / "oracle.msgpack", heads=False)),
    }


def test_sample_ltg_on_two_processes_equals_one_process(models, tmp_path):
    def cmd(workdir):
        return [sys.executable, "-m", "sample.ltg", "--config", "ltg:test",
                f"--workdir={workdir}", f"--config.pipeline={models['pipeline']}",
                f"--config.predictor={models['predictor']}", "--config.classes=1,4",
                "--config.samples_per_class=3", "--config.batch_size=2"]  # fmt: skip

    run_processes(cmd(tmp_path / "two"), 2, tmp_path / "two")
    run_one_process(cmd(tmp_path / "one"), 2, tmp_path / "one.txt")
    same_files(tmp_path / "one" / "data", tmp_path / "two" / "data")
    same_files(tmp_path / "one" / "contact_sheets", tmp_path / "two" / "contact_sheets")


def test_mining_generation_on_two_processes_equals_one_process(models, tmp_path):
    def cmd(workdir):
        return [sys.executable, str(ROOT / "tests" / "multiprocess_mining_check.py"),
                str(workdir), str(models["pipeline"]), str(models["predictor"]),
                str(models["oracle"])]  # fmt: skip

    run_processes(cmd(tmp_path / "two"), 2, tmp_path / "two")
    run_one_process(cmd(tmp_path / "one"), 2, tmp_path / "one.txt")
    for arm in ("unguided", "ltg"):
        one, two = (tmp_path / w / "synthetic" / arm for w in ("one", "two"))
        same_files(one / "data", two / "data")
        assert (one / "config.json").read_bytes() == (two / "config.json").read_bytes()
