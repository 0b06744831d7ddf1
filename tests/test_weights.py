"""Loading and saving diffusers-format folders: mapping, round trips, hashes and errors."""

from __future__ import annotations

import filecmp
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from ltg_jax import weights as W
from ltg_jax.models import class_context, class_embedder_from_config, init_params

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SD1, SD2 = FIXTURES / "tiny_sd", FIXTURES / "tiny_sd2"
UNET_FILE = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def pipe() -> W.Pipeline:
    return W.load_pipeline(SD1)


def copy(src: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(src, tmp_path / src.name))


def read_all(path: pathlib.Path) -> dict[str, np.ndarray]:
    infos, _ = W.read_header(path)
    return {k: np.array(W.read_tensor(v)) for k, v in infos.items()}


def assert_same_params(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("src", [SD1, SD2], ids=["fp32", "fp16+bf16"])
def test_folder_round_trips_bit_exactly(src, tmp_path):
    pipe = W.load_pipeline(src)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(pipe.unet_params))
    W.save_pipeline(pipe, tmp_path / "out")
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    saved = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*"))
    assert [f for f in saved if (tmp_path / "out" / f).is_file()] == files
    for f in files:  # every byte: safetensors headers, tensor data, configs, tokenizer
        assert filecmp.cmp(src / f, tmp_path / "out" / f, shallow=False), f


def test_storage_records_dtype_and_variant():
    storage = W.load_pipeline(SD2).storage
    assert storage["unet"] == W.Storage("float16", "fp16", "", {"format": "pt"})
    assert storage["text_encoder"].dtype == "bfloat16"


def test_variant_can_be_explicit():
    storage = W.load_pipeline(SD2, variant="fp16").storage
    assert storage["vae"].variant == "fp16"
    assert storage["text_encoder"].variant is None  # falls back to the plain file
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.bf16.safetensors or"):
        W.load_pipeline(SD2, variant="bf16")


def test_name_mapping_is_mechanical_and_invertible(pipe):
    from flax import traverse_util

    keys = set(read_all(SD1 / UNET_FILE))
    flat = traverse_util.flatten_dict(pipe.unet_params)
    assert {W.torch_key(p) for p in flat} == keys
    for path in flat:
        assert W.flax_path(W.torch_key(path), path[-1]) == path
    assert W.torch_key(("time_embedding", "linear_1", "kernel")) == "time_embedding.linear_1.weight"
    path = ("up_blocks_1", "attentions_0", "transformer_blocks_0", "ff", "net_0", "proj", "bias")
    assert W.torch_key(path) == "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.bias"


def test_layouts_are_transposed(pipe):
    stored = read_all(SD1 / UNET_FILE)
    conv = pipe.unet_params["conv_in"]["kernel"]
    np.testing.assert_array_equal(conv, stored["conv_in.weight"].transpose(2, 3, 1, 0))
    dense = pipe.unet_params["time_embedding"]["linear_1"]["kernel"]
    np.testing.assert_array_equal(dense, stored["time_embedding.linear_1.weight"].T)
    norm = pipe.unet_params["conv_norm_out"]["scale"]
    np.testing.assert_array_equal(norm, stored["conv_norm_out.weight"])


def test_mismatches_are_listed_in_one_error(tmp_path):
    folder = copy(SD1, tmp_path)
    tensors = read_all(folder / UNET_FILE)
    del tensors["conv_in.bias"]
    tensors["conv_out.weight"] = np.zeros((4, 8, 1, 1), np.float32)
    tensors["extra.weight"] = np.zeros((2,), np.float32)
    save_file(tensors, folder / UNET_FILE)
    vae_tensors = read_all(folder / "vae/diffusion_pytorch_model.safetensors")
    del vae_tensors["decoder.conv_out.bias"]
    save_file(vae_tensors, folder / "vae/diffusion_pytorch_model.safetensors")
    with pytest.raises(W.WeightsMismatchError) as err:
        W.load_pipeline(folder)
    msg = str(err.value)
    assert "4 tensor(s)" in msg and "nothing was loaded" in msg
    assert "missing    conv_in.bias  expected (8,)" in msg
    assert "conv_out.weight  expected (4, 8, 3, 3), found (4, 8, 1, 1)" in msg
    assert "unexpected extra.weight  found (2,)" in msg
    assert "vae/diffusion_pytorch_model.safetensors: missing    decoder.conv_out.bias" in msg


def test_unsupported_dtype_names_file_and_fix(tmp_path):
    folder = copy(SD1, tmp_path)
    tensors = read_all(folder / UNET_FILE)
    tensors["conv_in.bias"] = tensors["conv_in.bias"].astype(np.float64)
    save_file(tensors, folder / UNET_FILE)
    with pytest.raises(W.WeightsMismatchError, match=r"unet/.*conv_in.bias  F64 is not supported"):
        W.load_pipeline(folder)


def test_not_a_diffusers_folder(tmp_path):
    with pytest.raises(ValueError, match="not a diffusers-format folder.*model_index.json"):
        W.load_pipeline(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        W.load_pipeline(tmp_path / "nope")


def test_missing_component_config(tmp_path):
    folder = copy(SD1, tmp_path)
    (folder / "vae" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"vae/config.json is missing"):
        W.load_pipeline(folder)


def test_unsupported_block_type_names_file(tmp_path):
    folder = copy(SD1, tmp_path)
    cfg = json.loads((folder / "unet/config.json").read_text())
    cfg["down_block_types"][0] = "SimpleCrossAttnDownBlock2D"
    (folder / "unet/config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"unet/config.json: unsupported down_block_types") as e:
        W.load_pipeline(folder)
    assert "'CrossAttnDownBlock2D', 'DownBlock2D'" in str(e.value)


def test_pickle_only_component_says_how_to_convert(tmp_path):
    folder = copy(SD1, tmp_path)
    (folder / UNET_FILE).rename(folder / "unet/diffusion_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safe_serialization=True"):
        W.load_pipeline(folder)


def test_text_model_prefix_and_legacy_vae_names_load(pipe, tmp_path):
    folder = copy(SD1, tmp_path)
    te = folder / "text_encoder/model.safetensors"
    save_file({"text_model." + k: v for k, v in read_all(te).items()}, te)
    vae_file = folder / "vae/diffusion_pytorch_model.safetensors"
    legacy = {
        ".to_q.": ".query.",
        ".to_k.": ".key.",
        ".to_v.": ".value.",
        ".to_out.0.": ".proj_attn.",
    }
    renamed = {}
    for k, v in read_all(vae_file).items():
        for new, old in legacy.items():
            k = k.replace(new, old) if ".attentions." in k else k
        renamed[k] = v
    save_file(renamed, vae_file)
    loaded = W.load_pipeline(folder)
    assert loaded.storage["text_encoder"].prefix == "text_model."
    assert_same_params(loaded.text_encoder_params, pipe.text_encoder_params)
    assert_same_params(loaded.vae_params, pipe.vae_params)
    assert W.model_hash(folder) == W.model_hash(SD1)  # same weights, other layout
    W.save_pipeline(loaded, tmp_path / "out")
    assert filecmp.cmp(te, tmp_path / "out/text_encoder/model.safetensors", shallow=False)


def test_sharded_checkpoint_loads(pipe, tmp_path):
    folder = copy(SD1, tmp_path)
    tensors = read_all(folder / UNET_FILE)
    (folder / UNET_FILE).unlink()
    keys = sorted(tensors)
    shards = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2 :]}
    for name, part in shards.items():
        save_file({k: tensors[k] for k in part}, folder / "unet" / name)
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (folder / "unet/diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert_same_params(W.load_pipeline(folder).unet_params, pipe.unet_params)


def test_model_hash_is_stable_and_sensitive(tmp_path):
    h = W.model_hash(SD1)
    assert h == W.model_hash(SD1) and len(h) == 64
    assert h != W.model_hash(SD2)
    folder = copy(SD1, tmp_path)
    tensors = read_all(folder / UNET_FILE)
    tensors["conv_in.bias"][0] += 1.0
    save_file(tensors, folder / UNET_FILE)
    assert W.model_hash(folder) != h


def test_model_hash_covers_configs_with_defaults_filled(tmp_path):
    folder = copy(SD1, tmp_path)
    h = W.model_hash(folder)
    vae_config = folder / "vae/config.json"
    cfg = json.loads(vae_config.read_text())
    assert cfg.pop("scaling_factor") == 0.18215  # the default: omitting it changes nothing
    vae_config.write_text(json.dumps(cfg))
    assert W.model_hash(folder) == h
    vae_config.write_text(json.dumps({**cfg, "scaling_factor": 1.0}))
    assert W.model_hash(folder) != h
    vae_config.write_text(json.dumps(cfg))
    sched = folder / "scheduler/scheduler_config.json"
    sched.write_text(json.dumps({**json.loads(sched.read_text()), "steps_offset": 0}))
    assert W.model_hash(folder) != h


def test_save_dtype_override(pipe, tmp_path):
    W.save_pipeline(pipe, tmp_path, dtype="bfloat16")
    loaded = W.load_pipeline(tmp_path)
    assert loaded.storage["unet"].dtype == "bfloat16"
    expected = pipe.unet_params["conv_in"]["kernel"].astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(loaded.unet_params["conv_in"]["kernel"], expected)
    with pytest.raises(ValueError, match="float64"):
        W.save_pipeline(pipe, tmp_path / "x", dtype="float64")


def test_class_conditional_pipeline_round_trip(pipe, tmp_path):
    config = {"_class_name": "ClassEmbedder", "num_classes": 3, "embedding_dim": 16}
    embedder = class_embedder_from_config(config)
    params = init_params(embedder, jax.random.key(0))
    ldm = W.Pipeline(
        unet=pipe.unet,
        unet_params=pipe.unet_params,
        vae=pipe.vae,
        vae_params=pipe.vae_params,
        unet_config=pipe.unet_config,
        vae_config=pipe.vae_config,
        scheduler_config=pipe.scheduler_config,
        class_embedder=embedder,
        class_embedder_params=params,
        class_embedder_config=config,
    )
    W.save_pipeline(ldm, tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["class_embedder"] == ["ltg_jax", "ClassEmbedder"] and "text_encoder" not in index
    stored = read_all(tmp_path / "class_embedder/diffusion_pytorch_model.safetensors")
    assert list(stored) == ["embedding.weight"] and stored["embedding.weight"].shape == (4, 16)
    loaded = W.load_pipeline(tmp_path)
    assert loaded.text_encoder is None and loaded.tokenizer is None
    labels = jnp.array([0, 3])
    np.testing.assert_array_equal(
        class_context(loaded.class_embedder, loaded.class_embedder_params, labels),
        class_context(embedder, params, labels),
    )


def test_null_components_in_model_index_are_skipped(tmp_path):
    folder = copy(SD1, tmp_path)
    shutil.rmtree(folder / "text_encoder")
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    loaded = W.load_pipeline(folder)
    assert loaded.text_encoder is None and loaded.tokenizer is not None


def test_truncated_weights_are_named_in_one_error(tmp_path):
    folder = copy(SD1, tmp_path)
    data = (folder / UNET_FILE).read_bytes()
    (folder / UNET_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model.safetensors: not a readable "
                       r"safetensors file .* truncated"):  # fmt: skip
        W.load_pipeline(folder)
