"""Diffusers-format folders (safetensors) <-> our Flax parameter trees, without torch.

Folder layout (what `StableDiffusionPipeline.save_pretrained` writes):
    model_index.json
    unet/config.json          unet/diffusion_pytorch_model[.fp16].safetensors
    vae/config.json           vae/diffusion_pytorch_model[.fp16].safetensors
    text_encoder/config.json  text_encoder/model[.fp16].safetensors         (optional)
    tokenizer/tokenizer.json | vocab.json merges.txt, tokenizer_config.json (optional)
    text_encoder_2/, tokenizer_2/   SDXL's second text encoder (CLIPTextModelWithProjection)
    scheduler/scheduler_config.json                                         (optional)
    class_embedder/config.json diffusion_pytorch_model.safetensors          (optional, ours)
Other model_index entries (safety_checker, feature_extractor) are ignored.

Mapping, mechanical in both directions: a torch key `down_blocks.0.resnets.1.conv1.weight` is
the Flax path `down_blocks_0/resnets_1/conv1/kernel` (a numbered ModuleList child `x.<i>` is
the submodule `x_<i>`); conv weights OIHW <-> kernels HWIO, linear weights [out,in] <->
kernels [in,out], norm weights <-> `scale`, embedding weights <-> `embedding`. Params are
float32 whatever the stored dtype (F32, F16, BF16 via ml_dtypes); saving casts back to the
stored dtype, so load -> save reproduces a folder's tensors bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
import re
import shutil
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from tokenizers import Tokenizer

from ltg_jax import checks
from ltg_jax.models import (
    AutoencoderKL,
    ClassEmbedder,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    UNet2DConditionModel,
    abstract_params,
    class_embedder_from_config,
    clip_from_config,
    load_clip_tokenizer,
    unet_from_config,
    vae_from_config,
)
from ltg_jax.models.defaults import UnsupportedModelError, fill_defaults
from ltg_jax.models.layers import Dtype
from ltg_jax.models.vae_tiny import AutoencoderTiny, vae_tiny_from_config

Params = dict[str, Any]
PathLike = str | pathlib.Path

ST_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
# ModuleList attributes in diffusers/transformers: `<name>.<i>` <-> Flax submodule `<name>_<i>`.
LIST_NAMES = frozenset(
    {
        "down_blocks",
        "up_blocks",
        "resnets",
        "attentions",
        "downsamplers",
        "upsamplers",
        "transformer_blocks",
        "to_out",
        "net",
        "layers",
        "conv",  # AutoencoderTinyBlock's Sequential
    }
)
PT_METADATA = {"format": "pt"}  # what torch-side savers write; never mutated
# Buffers some checkpoints carry that are not parameters (recomputed by the model).
IGNORED_KEYS = frozenset({"embeddings.position_ids"})
# Pre-0.14 diffusers VAE attention names, renamed on load as diffusers itself does.
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_RE = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")


class Storage(NamedTuple):
    """How a component's weights were stored, so that saving reproduces them bit for bit."""

    dtype: str = "float32"  # float32 | float16 | bfloat16
    variant: str | None = None  # e.g. "fp16" -> diffusion_pytorch_model.fp16.safetensors
    prefix: str = ""  # e.g. "text_model." (transformers 4 CLIP checkpoints)
    metadata: Mapping[str, str] | None = PT_METADATA  # the safetensors header metadata


class Pipeline(NamedTuple):
    """A loaded folder: modules (built from the configs), float32 params and raw configs."""

    unet: UNet2DConditionModel
    unet_params: Params
    vae: AutoencoderKL
    vae_params: Params
    unet_config: dict
    vae_config: dict
    text_encoder: CLIPTextModel | None = None
    text_encoder_params: Params | None = None
    text_encoder_config: dict | None = None
    tokenizer: Tokenizer | None = None
    scheduler_config: dict | None = None
    class_embedder: ClassEmbedder | None = None
    class_embedder_params: Params | None = None
    class_embedder_config: dict | None = None
    model_index: dict | None = None
    storage: dict[str, Storage] = {}
    tokenizer_files: dict[str, bytes] = {}  # raw tokenizer/ files, written back verbatim
    # SDXL: the second text encoder (its penultimate states join the first's; its projected
    # pooled output is the UNet's text_embeds) and its tokenizer.
    text_encoder_2: CLIPTextModelWithProjection | None = None
    text_encoder_2_params: Params | None = None
    text_encoder_2_config: dict | None = None
    tokenizer_2: Tokenizer | None = None
    tokenizer_2_files: dict[str, bytes] = {}


class WeightsMismatchError(ValueError):
    """The checkpoint's tensors do not fit the modules built from its config.json files."""


# --------------------------------------------------------------------------- safetensors I/O


class TensorInfo(NamedTuple):
    """One tensor's header entry in a .safetensors file."""

    path: pathlib.Path
    key: str  # its name in the file
    dtype: str  # safetensors name: F32, F16, BF16, I64, ...
    shape: tuple[int, ...]


def read_header(path: pathlib.Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The tensors (name, dtype, shape) and metadata of a .safetensors file; no data is read."""
    try:
        with safe_open(path, framework="np") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118 - not a dict
            infos = {
                k: TensorInfo(path, k, s.get_dtype(), tuple(s.get_shape()))
                for k, s in slices.items()
            }
            return infos, dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise ValueError(
            f"{path}: not a readable safetensors file ({e}); it may be truncated: download or "
            "save it again"
        ) from e


def read_tensor(info: TensorInfo) -> np.ndarray:
    """One tensor in its stored dtype (F32, F16, or BF16 as ml_dtypes.bfloat16)."""
    with safe_open(info.path, framework="np") as f:
        return f.get_tensor(info.key)


def write_safetensors(
    path: pathlib.Path,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = PT_METADATA,
) -> None:
    """Write tensors with the `safetensors` library (the same bytes as torch-side savers)."""
    save_file(dict(tensors), str(path), metadata=dict(metadata) if metadata else None)


# --------------------------------------------------------------------------- name mapping


def torch_key(flax_path: tuple[str, ...]) -> str:
    """('down_blocks_0', 'conv1', 'kernel') -> 'down_blocks.0.conv1.weight'."""
    parts = []
    for seg in flax_path[:-1]:
        m = re.fullmatch(r"(.+)_(\d+)", seg)
        parts.append(f"{m[1]}.{m[2]}" if m and m[1] in LIST_NAMES else seg)
    return ".".join(parts + ["bias" if flax_path[-1] == "bias" else "weight"])


def flax_path(key: str, leaf: str) -> tuple[str, ...]:
    """'down_blocks.0.resnets.1.conv1.weight', 'kernel' -> ('down_blocks_0', ..., 'kernel')."""
    out: list[str] = []
    for seg in key.split(".")[:-1]:
        if seg.isdigit():
            out[-1] += f"_{seg}"
        else:
            out.append(seg)
    return (*out, leaf)


def to_torch_layout(array: np.ndarray, leaf: str) -> np.ndarray:
    """Flax kernel HWIO / [in,out] -> torch OIHW / [out,in]; other leaves unchanged."""
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    return array


def from_torch_layout(array: np.ndarray, leaf: str) -> np.ndarray:
    """torch OIHW / [out,in] -> Flax HWIO / [in,out]; other leaves unchanged."""
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    return array


def torch_shape(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    """The torch shape of a Flax leaf of `shape`."""
    return tuple(to_torch_layout(np.empty(shape, np.bool_), leaf).shape)


def expected_tensors(module: Any) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """torch key -> (flax path, torch shape) for every parameter of `module` (abstract init)."""
    flat = traverse_util.flatten_dict(abstract_params(module))
    return {torch_key(p): (p, torch_shape(tuple(s.shape), p[-1])) for p, s in flat.items()}


# --------------------------------------------------------------------------- folder reading

# component -> weights file stem
_COMPONENTS = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "text_encoder_2": "model",
    "class_embedder": "diffusion_pytorch_model",
}
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")  # CLIP text models (SD, SDXL)


def _build(name: str, config: dict, dtype: Dtype, remat: str, source: str) -> Any:
    """The module of component `name` from its config (errors name `source`)."""
    if name == "unet":
        return unet_from_config(config, dtype=dtype, remat=remat, source=source)
    if name == "vae":
        return vae_from_config(config, dtype=dtype, remat=remat, source=source)
    if name in TEXT_ENCODERS:
        return clip_from_config(config, dtype=dtype, source=source)
    return class_embedder_from_config(config, source=source)


def _read_json(path: pathlib.Path) -> dict:
    """JSON file -> dict with the file named in any error."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e


def weight_files(component_dir: pathlib.Path, stem: str, variant: str | None) -> list[pathlib.Path]:
    """The .safetensors file(s) of one component, single or sharded (`*.index.json`).

    A requested variant falls back to the plain file (as diffusers does); with no variant, a
    folder that ships exactly one variant (e.g. only fp16) is unambiguous and used.
    """
    singles, indexes = [f"{stem}.safetensors"], [f"{stem}.safetensors.index.json"]
    if variant:
        singles.insert(0, f"{stem}.{variant}.safetensors")
        indexes[:0] = [
            f"{stem}.safetensors.index.{variant}.json",
            f"{stem}.{variant}.safetensors.index.json",
        ]
    for name in singles:
        if (component_dir / name).is_file():
            return [component_dir / name]
    for name in indexes:
        if (component_dir / name).is_file():
            shards = sorted(set(_read_json(component_dir / name)["weight_map"].values()))
            return [component_dir / s for s in shards]
    if variant is None:
        found = sorted(component_dir.glob(f"{stem}.*.safetensors"))
        if len(found) == 1:
            return found
    found_bin = sorted(p.name for p in component_dir.glob("*.bin"))
    hint = (
        f"only PyTorch pickles {found_bin} are there; convert once with diffusers/transformers: "
        "`Model.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`"
        if found_bin
        else f"found {sorted(p.name for p in component_dir.iterdir())}"
    )
    want = " or ".join(singles) + (" (or pass variant=...)" if variant is None else "")
    raise FileNotFoundError(f"{component_dir}: no {want}; {hint}")


def _normalise_key(component: str, key: str, prefix: str) -> str:
    """Checkpoint key -> our canonical key (drops `text_model.`, renames legacy VAE attention)."""
    if prefix and key.startswith(prefix):
        key = key[len(prefix) :]
    m = _LEGACY_RE.match(key) if component == "vae" else None
    return f"{m[1]}.{_LEGACY_ATTENTION[m[2]]}.{m[3]}" if m else key


class _Plan(NamedTuple):
    """A validated component: everything needed to read it, checked before any data is read."""

    module: Any
    config: dict
    tensors: dict[str, TensorInfo]  # canonical torch key -> stored tensor
    expected: dict[str, tuple[tuple[str, ...], tuple[int, ...]]]
    storage: Storage


def _plan_component(
    folder: pathlib.Path, name: str, variant: str | None, dtype: Dtype, remat: str,
    problems: list[str],
) -> _Plan:  # fmt: skip
    """Build the module from config.json and compare the checkpoint header against it."""
    stem = _COMPONENTS[name]
    cdir = folder / name
    if not (cdir / "config.json").is_file():
        raise FileNotFoundError(
            f"{cdir / 'config.json'} is missing: {folder} lists `{name}` in model_index.json "
            "but the component folder is incomplete"
        )
    config = _read_json(cdir / "config.json")
    module = _build(name, config, dtype, remat, str(cdir / "config.json"))
    files = weight_files(cdir, stem, variant)
    stored: dict[str, TensorInfo] = {}
    for f in files:
        stored.update(read_header(f)[0])
    metadata = read_header(files[0])[1] or None
    keys = [k for k in stored if k not in IGNORED_KEYS and not k.endswith(".position_ids")]
    prefix = "text_model." if keys and all(k.startswith("text_model.") for k in keys) else ""
    tensors = {_normalise_key(name, k, prefix): stored[k] for k in keys}
    expected = expected_tensors(module)
    where = files[0].relative_to(folder) if len(files) == 1 else f"{name}/ (sharded)"
    problems += tensor_problems(expected, tensors, str(where), prefix)
    dtypes = [t.dtype for t in tensors.values() if t.dtype in ST_DTYPES]
    stored_dtype = max(set(dtypes), key=dtypes.count) if dtypes else "F32"
    # The variant actually read (a requested one may have fallen back to the plain file).
    file_variant = _variant_of(files[0].name, stem) if len(files) == 1 else variant
    inv = {v: k for k, v in DTYPE_NAMES.items()}
    return _Plan(
        module,
        config,
        tensors,
        expected,
        Storage(inv[stored_dtype], file_variant, prefix, metadata),
    )


def tensor_problems(
    expected: Mapping[str, tuple[tuple[str, ...], tuple[int, ...]]],
    tensors: Mapping[str, TensorInfo],
    where: str,
    prefix: str = "",
) -> list[str]:
    """One line per missing, unexpected, mis-shaped or unsupported-dtype tensor."""
    problems = [
        f"  {where}: missing    {prefix}{k}  expected {expected[k][1]}"
        for k in sorted(expected.keys() - tensors.keys())
    ]
    problems += [
        f"  {where}: unexpected {prefix}{k}  found {tensors[k].shape}"
        for k in sorted(tensors.keys() - expected.keys())
    ]
    for k in sorted(tensors.keys() & expected.keys()):
        info = tensors[k]
        if info.shape != expected[k][1]:
            problems.append(
                f"  {where}: shape      {prefix}{k}  expected {expected[k][1]}, found {info.shape}"
            )
        if info.dtype not in ST_DTYPES:
            problems.append(
                f"  {where}: dtype      {prefix}{k}  {info.dtype} is not supported "
                f"(use one of {list(ST_DTYPES)}: re-save the model in float32/float16/bfloat16)"
            )
    return problems


def load_tiny_vae(
    folder: PathLike,
    *,
    dtype: Dtype = jnp.float32,
    place: Callable[[np.ndarray], Any] = jnp.asarray,
) -> tuple[AutoencoderTiny, Params, dict]:
    """An AutoencoderTiny folder (TAESD: config.json + diffusion_pytorch_model.safetensors).

    Returns (module, float32 params, config); mismatched tensors are one WeightsMismatchError.
    """
    folder = pathlib.Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder}: no config.json; point at an AutoencoderTiny folder (e.g. a TAESD "
            "download, or what train.tiny_decoder writes)"
        )
    config = _read_json(folder / "config.json")
    module = vae_tiny_from_config(config, dtype=dtype, source=str(folder / "config.json"))
    files = weight_files(folder, "diffusion_pytorch_model", None)
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        tensors.update(read_header(f)[0])
    expected = expected_tensors(module)
    problems = tensor_problems(expected, tensors, files[0].name)
    if problems:
        raise WeightsMismatchError(
            f"{folder}: {len(problems)} tensor(s) do not match the AutoencoderTiny built from "
            "its config.json:\n" + "\n".join(problems)
        )
    dtypes = [t.dtype for t in tensors.values()]
    inv = {v: k for k, v in DTYPE_NAMES.items()}
    storage = Storage(inv[max(set(dtypes), key=dtypes.count)], None, "", None)
    plan = _Plan(module, config, tensors, expected, storage)
    return module, _materialise(plan, place), config


def _variant_of(filename: str, stem: str) -> str | None:
    """'diffusion_pytorch_model.fp16.safetensors' -> 'fp16'; the plain name -> None."""
    m = re.fullmatch(re.escape(stem) + r"\.([^.-]+)\.safetensors", filename)
    return m[1] if m else None


def _materialise(plan: _Plan, place: Callable[[np.ndarray], Any]) -> Params:
    """Read, upcast to float32, transpose and place every tensor of a validated plan.

    One tensor at a time: the host copy of each is freed once it is placed, so loading never
    holds more than one float32 copy of the weights.
    """
    flat, bad = {}, []
    for key, (path, _) in plan.expected.items():
        info = plan.tensors[key]
        arr = np.asarray(read_tensor(info), np.float32)
        if not np.isfinite(arr).all():  # NaN weights would sample black images, silently
            bad.append(f"{info.path.parent.name}/{info.path.name}: {info.key}")
            continue
        flat[path] = place(np.ascontiguousarray(from_torch_layout(arr, path[-1])))
    if bad:
        shown = ", ".join(bad[:8]) + (f" (+{len(bad) - 8} more)" if len(bad) > 8 else "")
        raise checks.NonFiniteError(
            f"{len(bad)} tensor(s) hold NaN or inf ({shown}); the weights are corrupt: "
            "download or export them again"
        )
    return traverse_util.unflatten_dict(flat)


def _listed(index: Mapping, name: str) -> bool:
    """model_index.json names a component as [library, class]; [null, null] means absent."""
    entry = index.get(name)
    return isinstance(entry, list | tuple) and bool(entry) and entry[0] is not None


def check_supported(folder: PathLike, index: Mapping | None = None) -> None:
    """Raises UnsupportedModelError (one line) for model families we do not implement.

    Reads JSON files only, so callers can refuse a folder before loading anything.
    """
    folder = pathlib.Path(folder)
    index = _read_json(folder / "model_index.json") if index is None else index
    kind = index.get("_class_name", "this pipeline")
    if _listed(index, "transformer") or (folder / "transformer").is_dir():
        raise UnsupportedModelError(
            f"{folder}: {kind} denoises with a transformer (SD3, Flux, PixArt, ...), which is "
            "not supported; use a Stable Diffusion 1.x/2.x or SDXL folder (a UNet)"
        )
    if index.get("requires_aesthetics_score") or (
        _listed(index, "text_encoder_2") and not _listed(index, "text_encoder")
    ):
        raise UnsupportedModelError(
            f"{folder}: the SDXL refiner (img2img, aesthetic-score conditioning) is not "
            "supported; use the SDXL base folder"
        )


def _components(folder: pathlib.Path) -> tuple[dict, list[str]]:
    """model_index.json and the components of it that we load."""
    index_path = folder / "model_index.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not index_path.is_file():
        raise ValueError(
            f"{folder} is not a diffusers-format folder (no model_index.json). Expected "
            "model_index.json with unet/, vae/, scheduler/ (and text_encoder/, tokenizer/). "
            "Convert a single-file checkpoint once with diffusers: "
            "`StableDiffusionPipeline.from_single_file(path).save_pretrained(out)`"
        )
    index = _read_json(index_path)
    check_supported(folder, index)
    for required in ("unet", "vae"):
        if not _listed(index, required) and not (folder / required).is_dir():
            raise ValueError(
                f"{index_path}: no `{required}` component; a pipeline needs unet and vae"
            )
    names = [n for n in _COMPONENTS if _listed(index, n) or (folder / n / "config.json").is_file()]
    return index, names


def storage_cast(array: np.ndarray, param_dtype: Dtype) -> np.ndarray:
    """A parameter as stored in memory: matrices and kernels in `param_dtype`, 1-D ones f32.

    Biases and norm scales are a rounding error of the memory and keep full precision.
    """
    return array.astype(param_dtype) if array.ndim >= 2 else array


def load_pipeline(
    folder: PathLike,
    *,
    variant: str | None = None,
    dtype: Dtype = jnp.float32,
    remat: str = "none",
    place: Callable[[np.ndarray], Any] = jnp.asarray,
    param_dtype: Dtype = jnp.float32,
) -> Pipeline:
    """Load a diffusers-format folder into modules + float32 params, without torch.

    `place` puts each host tensor where it will be used (default: the default device; the
    samplers pass `parallel.replicate` onto their mesh, so no second copy is made there).

    `variant` picks e.g. `*.fp16.safetensors` (a folder holding only one variant needs none);
    `dtype` is the modules' compute dtype; `param_dtype` how weights are held in memory
    (bfloat16 halves it; see `storage_cast`); `remat` is "none" | "decoder" | "all". Every missing,
    unexpected, mis-shaped or unsupported-dtype tensor of every component is reported in one
    WeightsMismatchError before any tensor is read.
    """
    folder = pathlib.Path(folder)
    index, names = _components(folder)
    problems: list[str] = []
    plans = {n: _plan_component(folder, n, variant, dtype, remat, problems) for n in names}
    if problems:
        raise WeightsMismatchError(
            f"{folder}: {len(problems)} tensor(s) do not match the modules built from the "
            "config.json files (nothing was loaded); check that each component's config and "
            "weights come from the same model:\n" + "\n".join(problems)
        )
    # Tokenizers fail (missing or broken files) before any weight is read.
    tokenizer, tokenizer_files = _read_tokenizer(folder, index, "tokenizer")
    tokenizer_2, tokenizer_2_files = _read_tokenizer(folder, index, "tokenizer_2")
    cast = lambda x: place(storage_cast(x, param_dtype))
    params = {n: _materialise(p, cast) for n, p in plans.items()}
    sched = folder / "scheduler" / "scheduler_config.json"
    get = lambda n, field: getattr(plans[n], field) if n in plans else None
    return Pipeline(
        unet=plans["unet"].module,
        unet_params=params["unet"],
        vae=plans["vae"].module,
        vae_params=params["vae"],
        unet_config=plans["unet"].config,
        vae_config=plans["vae"].config,
        text_encoder=get("text_encoder", "module"),
        text_encoder_params=params.get("text_encoder"),
        text_encoder_config=get("text_encoder", "config"),
        tokenizer=tokenizer,
        scheduler_config=_read_json(sched) if sched.is_file() else None,
        class_embedder=get("class_embedder", "module"),
        class_embedder_params=params.get("class_embedder"),
        class_embedder_config=get("class_embedder", "config"),
        model_index=index,
        storage={n: p.storage for n, p in plans.items()},
        tokenizer_files=tokenizer_files,
        text_encoder_2=get("text_encoder_2", "module"),
        text_encoder_2_params=params.get("text_encoder_2"),
        text_encoder_2_config=get("text_encoder_2", "config"),
        tokenizer_2=tokenizer_2,
        tokenizer_2_files=tokenizer_2_files,
    )


def _read_tokenizer(
    folder: pathlib.Path, index: Mapping, name: str
) -> tuple[Tokenizer | None, dict[str, bytes]]:
    """The folder's `name` tokenizer and its raw files (kept to write back); (None, {}) if none."""
    tok_dir = folder / name
    present = tok_dir.is_dir() and (
        _listed(index, name)
        or any((tok_dir / f).is_file() for f in ("vocab.json", "tokenizer.json"))
    )
    if not present:
        return None, {}
    files = {f.name: f.read_bytes() for f in sorted(tok_dir.iterdir()) if f.is_file()}
    return load_clip_tokenizer(tok_dir), files


# --------------------------------------------------------------------------- folder writing


def _write_json(path: pathlib.Path, obj: Mapping) -> None:
    """diffusers/transformers config style: indent 2, sorted keys, trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def params_to_tensors(
    params: Params, dtype: str = "float32", prefix: str = ""
) -> dict[str, np.ndarray]:
    """Flax params -> {torch key: torch-layout array in `dtype`} (the inverse of loading)."""
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype={dtype!r}: use one of {list(DTYPE_NAMES)}")
    np_dtype = ST_DTYPES[DTYPE_NAMES[dtype]]
    out = {}
    for path, value in traverse_util.flatten_dict(params).items():
        arr = to_torch_layout(np.asarray(jax.device_get(value), np.float32), path[-1])
        out[prefix + torch_key(path)] = np.ascontiguousarray(arr.astype(np_dtype))
    return out


def _default_index(pipe: Pipeline) -> dict:
    """model_index.json for a pipeline built in code (no source folder)."""
    index: dict[str, Any] = {
        "_class_name": "StableDiffusionPipeline"
        if pipe.text_encoder
        else "LTGClassConditionalPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if pipe.scheduler_config:
        index["scheduler"] = [
            "diffusers",
            pipe.scheduler_config.get("_class_name", "DDIMScheduler"),
        ]
    if pipe.text_encoder_params is not None:
        index["text_encoder"] = ["transformers", "CLIPTextModel"]
    if pipe.tokenizer_files:
        index["tokenizer"] = ["transformers", "CLIPTokenizer"]
    if pipe.text_encoder_2_params is not None:
        index["_class_name"] = "StableDiffusionXLPipeline"
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    if pipe.tokenizer_2_files:
        index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    if pipe.class_embedder_params is not None:
        index["class_embedder"] = ["ltg_jax", "ClassEmbedder"]
    return index


def save_pipeline(
    pipe: Pipeline, folder: PathLike, *, dtype: str | None = None, variant: str | None = None
) -> None:
    """Write `pipe` as a diffusers-format folder loadable by `load_pipeline` and diffusers.

    Each component keeps its loaded `Storage` (dtype, variant file name, key prefix) unless
    `dtype` ("float32" | "float16" | "bfloat16") or `variant` override it.
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "model_index.json", pipe.model_index or _default_index(pipe))
    parts = {
        "unet": (pipe.unet_config, pipe.unet_params),
        "vae": (pipe.vae_config, pipe.vae_params),
        "text_encoder": (pipe.text_encoder_config, pipe.text_encoder_params),
        "text_encoder_2": (pipe.text_encoder_2_config, pipe.text_encoder_2_params),
        "class_embedder": (pipe.class_embedder_config, pipe.class_embedder_params),
    }
    for name, (config, params) in parts.items():
        if params is None:
            continue
        store = pipe.storage.get(name, Storage())
        store = store._replace(dtype=dtype or store.dtype, variant=variant or store.variant)
        stem = _COMPONENTS[name]
        fname = f"{stem}.{store.variant}.safetensors" if store.variant else f"{stem}.safetensors"
        _write_json(folder / name / "config.json", config)
        tensors = params_to_tensors(params, store.dtype, store.prefix)
        write_safetensors(folder / name / fname, tensors, store.metadata)
    if pipe.scheduler_config is not None:
        _write_json(folder / "scheduler" / "scheduler_config.json", pipe.scheduler_config)
    tokenizers = {"tokenizer": pipe.tokenizer_files, "tokenizer_2": pipe.tokenizer_2_files}
    for name, files in tokenizers.items():
        if files:
            tok_dir = folder / name
            shutil.rmtree(tok_dir, ignore_errors=True)
            tok_dir.mkdir()
            for fname, data in files.items():
                (tok_dir / fname).write_bytes(data)


# --------------------------------------------------------------------------- content hash

# Fields that record who wrote a config, not what the model is.
_PROVENANCE_KEYS = frozenset({"_diffusers_version", "transformers_version", "_name_or_path"})


def model_hash(folder: PathLike, *, variant: str | None = None) -> str:
    """sha256 hex of what a folder computes: every weight tensor and every config.

    Weights enter as (canonical name, dtype, shape, bytes); configs with diffusers' defaults
    filled in (an omitted field and its default hash alike), scheduler config and tokenizer
    files as they are. Stable across file layout (sharding, tensor order, `text_model.`
    prefix, legacy names); changes when any value, dtype, shape or config field changes.
    Memoised per process on the files' sizes and mtimes: a run hashes each folder once.
    """
    folder = pathlib.Path(folder).resolve()
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _model_hash(folder, variant, stamp)


@functools.lru_cache(maxsize=16)
def _model_hash(folder: pathlib.Path, variant: str | None, stamp: tuple) -> str:
    del stamp  # the cache key only
    _, names = _components(folder)
    digest = hashlib.sha256()
    for name in names:
        config = fill_defaults(name, _read_json(folder / name / "config.json"))
        config = {k: v for k, v in config.items() if k not in _PROVENANCE_KEYS}
        digest.update(f"{name}/config.json|{json.dumps(config, sort_keys=True)}\n".encode())
        infos: dict[str, TensorInfo] = {}
        for f in weight_files(folder / name, _COMPONENTS[name], variant):
            infos.update(read_header(f)[0])
        keys = [k for k in infos if k not in IGNORED_KEYS and not k.endswith(".position_ids")]
        prefix = "text_model." if keys and all(k.startswith("text_model.") for k in keys) else ""
        for canon, key in sorted((_normalise_key(name, k, prefix), k) for k in keys):
            info = infos[key]
            digest.update(f"{name}/{canon}|{info.dtype}|{list(info.shape)}\n".encode())
            digest.update(np.ascontiguousarray(read_tensor(info)).tobytes())
    sched = folder / "scheduler" / "scheduler_config.json"
    if sched.is_file():
        config = {k: v for k, v in _read_json(sched).items() if k not in _PROVENANCE_KEYS}
        digest.update(f"scheduler|{json.dumps(config, sort_keys=True)}\n".encode())
    for tok in sorted(folder.glob("tokenizer*/*")):  # tokenizer/ and SDXL's tokenizer_2/
        rel = tok.relative_to(folder).as_posix()
        digest.update(f"{rel}|".encode() + tok.read_bytes() + b"\n")
    return digest.hexdigest()
