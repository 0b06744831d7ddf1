"""Bad numbers, foreign files, busy or unwritable workdirs: one clear error, nothing lost.

Each test is a case of issue 11; without its fix the run would write black images and NaN
JSON with exit 0, delete another program's files, claim a workdir for a failed start, or
die with a raw traceback.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from test_ltg_sampling import ltg_config, tiny_bundle, tiny_pipeline
from test_mining import config_for as mining_config
from test_mining import fashion_named

from ltg_jax import (
    checkpointing,
    checks,
    cli,
    finetune,
    io,
    ltg_sampling,
    metrics,
    mining,
    predictor,
    predictor_training,
    weights,
    workdirs,
)
from ltg_jax.data import synthetic

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    return {"pipeline": tiny_pipeline(root / "pipeline"), "predictor": tiny_bundle(root / "b.mp")}


def strict_json(path: Path):
    """Parses JSON the way strict readers do: NaN / Infinity are errors."""

    def refuse(name):
        raise ValueError(f"{path} holds {name}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def poisoned_copy(
    folder: Path, out: Path, component: str = "unet", key: str = "", value: float = np.nan
) -> tuple[Path, str]:
    """A copy of a model folder with `value` in one tensor of `component`; (folder, its key)."""
    shutil.copytree(folder, out)
    path = out / component / "diffusion_pytorch_model.safetensors"
    metadata = weights.read_header(path)[1]
    tensors = load_file(path)
    key = key or sorted(tensors)[0]
    tensors[key] = tensors[key].copy()
    tensors[key].flat[0] = value
    save_file(tensors, path, metadata=metadata)
    return out, key


# ---------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"sampler.guidance.w": float("nan")}, r"--config.sampler.guidance.w=nan"),
        ({"sampler.guidance.w": float("inf")}, r"--config.sampler.guidance.w=inf"),
        ({"sampler.cfg_scale": float("nan")}, r"--config.sampler.cfg_scale=nan"),
        ({"signal": "entropy:nan"}, r"weights \['entropy:nan'\] are not finite"),
    ],
)
def test_non_finite_settings_are_refused_before_the_workdir(assets, tmp_path, overrides, match):
    workdir = tmp_path / "run"
    with pytest.raises(checks.NonFiniteError, match=match):
        ltg_sampling.run_ltg(ltg_config(assets, **overrides), workdir)
    assert not workdir.exists()


def test_nan_weights_are_named_and_nothing_is_written(assets, tmp_path):
    folder, key = poisoned_copy(assets["pipeline"], tmp_path / "nan_model")
    workdir = tmp_path / "run"
    with pytest.raises(
        checks.NonFiniteError, match=f"unet/diffusion_pytorch_model.safetensors: {key}"
    ):
        ltg_sampling.run_ltg(ltg_config(assets, pipeline=str(folder)), workdir)
    assert not workdir.exists()


def test_mining_on_nan_weights_stops_before_generating(tmp_path):
    pipeline = tiny_pipeline(tmp_path / "model")
    folder, key = poisoned_copy(pipeline, tmp_path / "nan_model", "vae")
    models = {
        "pipeline": folder,
        "predictor": fashion_named(tiny_bundle(tmp_path / "b.msgpack")),
        "oracle": fashion_named(tiny_bundle(tmp_path / "o.msgpack", heads=False)),
    }
    with pytest.raises(
        checks.NonFiniteError, match=f"vae/diffusion_pytorch_model.safetensors: {key}"
    ):
        mining.run_mining(mining_config(models), tmp_path / "mine")
    assert not (tmp_path / "mine").exists()


def test_nan_predictor_bundle_is_refused(assets, tmp_path):
    bundle = predictor.load_predictor_bundle(assets["predictor"])
    params = bundle.params
    leaf = next(iter(params["predictor"]))
    kernel = np.array(params["predictor"][leaf]["kernel"])
    kernel.flat[0] = np.nan
    params["predictor"] = {
        **params["predictor"],
        leaf: {**params["predictor"][leaf], "kernel": kernel},
    }
    path = predictor.save_predictor_bundle(
        tmp_path / "nan.msgpack", bundle.predictor, params, bundle.heads, bundle.metadata
    )
    with pytest.raises(ValueError, match=rf"--config.predictor: .*predictor/{leaf}/kernel"):
        ltg_sampling.run_ltg(ltg_config(assets, predictor=str(path)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_batch_that_blows_up_stops_the_run_before_it_is_written(assets, tmp_path):
    # Finite weights pass the load check, but 3e38 in the decoder's last conv overflows to
    # inf: the decoded images are not finite.
    folder, _ = poisoned_copy(
        assets["pipeline"], tmp_path / "overflow", "vae", "decoder.conv_out.weight", 3e38
    )
    workdir = tmp_path / "run"
    with pytest.raises(checks.NonFiniteError, match=r"sampled images of samples \[0, 1\].*Lower"):
        ltg_sampling.run_ltg(ltg_config(assets, pipeline=str(folder)), workdir)
    data = workdir / ltg_sampling.DATA_DIR
    assert not list(data.rglob("*.png")) and not synthetic.read_rows(data)


def test_training_stops_at_the_first_non_finite_loss(assets, tmp_path):
    bundle = predictor.load_predictor(assets["predictor"])
    rng = np.random.default_rng(0)
    real = {
        "image": rng.uniform(-1, 1, (16, 32, 32, 1)).astype(np.float32),
        "label": rng.integers(0, 10, 16).astype(np.int32),
    }
    train = {"num_steps": 6, "batch_size": 8, "learning_rate": 1e30, "warmup_steps": 0,
             "weight_decay": 0.0, "synthetic_fraction": 0.0, "augment": False,
             "checkpoint_every": 1}  # fmt: skip
    with pytest.raises(checks.NonFiniteError, match=r"fine-tuning in .*: loss=nan.* at step \d"):
        finetune.finetune(bundle, real, {"image": real["image"][:0], "label": real["label"][:0]},
                          train, 0, tmp_path / "ft")  # fmt: skip
    state, step = checkpointing.restore_latest(tmp_path / "ft")
    assert step < 6 and not checks.non_finite_names(state["params"])  # what was saved is finite


def test_json_is_strict_nan_becomes_null(tmp_path):
    path = io.atomic_write_json(
        tmp_path / "a.json", {"a": float("nan"), "b": np.float32("inf"), "c": [1.0, np.nan]}
    )
    assert strict_json(path) == {"a": None, "b": None, "c": [1.0, None]}
    io.append_jsonl(tmp_path / "r.jsonl", [{"x": np.float64("nan")}])
    assert io.read_jsonl(tmp_path / "r.jsonl") == [{"x": None}]


# ---------------------------------------------------------------- files that are not ours


def test_partial_file_sweep_takes_only_ours_and_skips_nested_workdirs(tmp_path):
    ours = tmp_path / "data" / f".0000001.png.abc{io.PARTIAL_SUFFIX}"
    foreign = tmp_path / "data" / ".0000001.png.abc.tmp"
    nested = tmp_path / "other_job" / f".x.png.abc{io.PARTIAL_SUFFIX}"
    for path in (ours, foreign, nested):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (nested.parent / workdirs.LOCK_FILE).write_text("{}")  # another job's workdir
    assert workdirs.remove_partial_files(tmp_path) == 1
    assert not ours.exists() and foreign.exists() and nested.exists()


def test_a_second_job_on_a_workdir_is_refused_naming_the_holder(assets, tmp_path):
    workdir = tmp_path / "run"
    busy = rf"--workdir={workdir} is in use by pid {os.getpid()}"
    with workdirs.claim(workdir), pytest.raises(ValueError, match=busy):  # held by "another job"
        ltg_sampling.run_ltg(ltg_config(assets), workdir)
    assert not (workdir / ltg_sampling.CONFIG_FILE).exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ltg_jax import workdirs\n"
         "with workdirs.claim(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(ValueError, match=f"in use by pid {holder.pid}"),
            workdirs.claim(tmp_path),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdirs.claim(tmp_path):  # the kernel released the dead holder's lock
        pass


# ---------------------------------------------------------------- claim only after validation


def truncated_copy(folder: Path, out: Path) -> Path:
    shutil.copytree(folder, out)
    path = out / "vae" / "diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return out


def test_failed_starts_leave_nothing_and_the_corrected_rerun_works(assets, tmp_path):
    workdir = tmp_path / "run"
    broken = truncated_copy(assets["pipeline"], tmp_path / "truncated")
    with pytest.raises(
        ValueError, match=r"vae/diffusion_pytorch_model.safetensors: not a readable"
    ):
        ltg_sampling.run_ltg(ltg_config(assets, pipeline=str(broken)), workdir)
    rgb = tmp_path / "rgb.msgpack"
    net = predictor.ConvClassifier(num_classes=10, widths=(4, 8), feature_dim=8)
    b = predictor.load_predictor_bundle(assets["predictor"])
    meta = {**b.metadata, "input": {"shape": [32, 32, 3]}}
    predictor.save_predictor_bundle(rgb, net, b.params, b.heads, meta)
    with pytest.raises(ValueError, match="--config.predictor"):
        ltg_sampling.run_ltg(ltg_config(assets, predictor=str(rgb)), workdir)
    assert not workdir.exists()
    summary = ltg_sampling.run_ltg(ltg_config(assets), workdir)  # the corrected rerun
    assert summary["num_samples"] == 6


def test_a_bad_model_config_does_not_claim_a_trainer_workdir(tmp_path):
    config = cli.load_config_file(ROOT / "configs" / "predictor.py", "test")
    config.model.widths = (8, -4)
    with pytest.raises(ValueError, match=r"--config.model: the model cannot be built .*-4"):
        predictor_training.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()


# ---------------------------------------------------------------- one line, not a traceback


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.mark.parametrize(
    "args,match",
    [
        (["--config.foo=1"], r"--config.foo: the config has no such key; config has batch_size"),
        (["--config.sampler.solvr=ddim"], r"config.sampler has cfg_scale, eta, guidance"),
        (["--config.classes=1", "--config.classes=2"], r"--config.classes is given 2 times"),
        (["--config.classes=a,b"], r"--config.classes=a,b: expected integers.*class_names"),
        (["--config.sampler.guidance.w=nan"], r"--config.sampler.guidance.w=nan: use a finite"),
    ],
)
def test_bad_overrides_are_one_line_errors(tmp_path, args, match):
    done = run_cli("sample.ltg", "--config", "ltg:test", f"--workdir={tmp_path / 'w'}", *args)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert re.search(match, lines[0]), lines[0]
    assert not (tmp_path / "w").exists()


def test_text_variant_without_a_pipeline_names_the_flag(tmp_path):
    done = run_cli("sample.ltg", "--config", "ltg:text", f"--workdir={tmp_path / 'w'}")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: --config.pipeline is empty; this variant needs a model folder: "
        "--config.pipeline=/path/to/stable-diffusion (a diffusers-format folder)"
    )


def test_unwritable_workdirs_are_named_before_any_sampling(assets, tmp_path, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    config = load_grid_config(assets)
    monkeypatch.setattr(ltg_sampling.sampling, "make_sampler", _no_sampling)
    with pytest.raises(ValueError, match=rf"--workdir={a_file} is a file, not a folder"):
        ltg_sampling.run_grid(config, a_file)
    with pytest.raises(ValueError, match=rf"--workdir={a_file}/sub: .*a file is in the way"):
        ltg_sampling.run_grid(config, a_file / "sub")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ro"))

    monkeypatch.setattr(workdirs.tempfile, "TemporaryFile", read_only)
    with pytest.raises(ValueError, match=r"cannot write .*/ro \(Read-only.*pass a writable --work"):
        ltg_sampling.run_grid(config, tmp_path / "ro")


def _no_sampling(*args, **kwargs):
    raise AssertionError("sampled before the workdir was checked")


def load_grid_config(assets):
    config = cli.load_config_file(ROOT / "configs" / "grid.py", "test")
    config.pipeline = str(assets["pipeline"])
    return config


def test_disk_full_mid_run_is_one_line_naming_the_file(monkeypatch, capsys):
    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/w/data/001_x/0000003.png")

    with pytest.raises(SystemExit) as exit_:
        cli.run(full, argv=["prog"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: no space left on the device while writing /w/data/001_x/0000003.png; free "
        "space (or pass another --workdir) and rerun the same command: it resumes where it "
        "stopped\n"
    )


# ---------------------------------------------------------------- metrics rows after a resume


def test_metrics_rows_redone_after_a_resume_are_not_duplicated(tmp_path):
    writer = metrics.MetricsWriter(tmp_path)
    for step in (1, 2, 3):  # a run checkpointed at 2, logged 3, then was killed
        writer.write(step, loss=float(step))
    with (tmp_path / metrics.METRICS_FILE).open("a") as f:
        f.write('{"step": 4, "lo')  # killed mid-line
    resumed = metrics.MetricsWriter(tmp_path, resume_step=2)
    resumed.write(3, loss=30.0)
    resumed.write(4, loss=40.0)
    resumed.write(4, **{"test/overall": 0.5})  # other metrics at the same step: kept
    resumed.write(4, **{"test/overall": 0.6})  # the same metrics again (a rerun): replaced
    rows = io.read_jsonl(tmp_path / metrics.METRICS_FILE)
    assert [(r["step"], r.get("loss", r.get("test/overall"))) for r in rows] == [
        (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0), (4, 0.6)
    ]  # fmt: skip


# ---------------------------------------------------------------- progress per arm


def test_progress_labels_name_the_arm(assets):
    assert ltg_sampling.progress_label(ltg_config(assets)) == "ltg entropy w=2"
    unguided = ltg_config(assets, **{"sampler.guidance.w": 0.0})
    assert ltg_sampling.progress_label(unguided) == "unguided"


def test_finite_checks_name_the_leaves():
    tree = {"a": {"kernel": np.array([1.0, np.nan])}, "b": np.ones(3), "c": np.array([math.inf])}
    assert checks.non_finite_names(tree) == ["a/kernel", "c"]
    with pytest.raises(checks.NonFiniteError, match=r"x hold NaN or inf \(a/kernel, c\); fix"):
        checks.require_finite(tree, "x", "fix")
