"""The predictor f = g ∘ h, its epistemic heads, and the one-pass longtail scorer.

Any classifier plugs in through the `Predictor` protocol: `apply(params, images[B,H,W,C]) ->
(features[B,D], logits[B,K])`. The bundled `ConvClassifier` has no batch statistics, so its
apply is a pure function of its params (no mutable collections to thread through guidance).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from ltg_jax import adapters, assets, checks, io, signals
from ltg_jax.models.conv import conv_general_dilated

Array = jax.Array
Params = Any
BUNDLE_FORMAT = "ltg-predictor-bundle/1"
HEADS_FORMAT = "ltg-epistemic-heads/1"  # heads alone, for a predictor given by import path
# Trained by our entry points (configs/predictor.py, configs/epistemic_head.py).
SHIPPED_PREDICTOR = assets.PREDICTOR_BUNDLE  # Fashion-MNIST-LT predictor + 8 epistemic heads
SHIPPED_ORACLE = assets.ORACLE_BUNDLE  # same architecture on the balanced Fashion-MNIST
RANGE_TOLERANCE = 1e-3  # float rounding at the ends of [-1, 1]


class BundleFormatError(ValueError):
    """A file that is not one of our msgpack predictor bundles (says what to use instead)."""


class Predictor(Protocol):
    """A classifier usable by the scorer and by guidance."""

    def __call__(self, params: Params, images: Array) -> tuple[Array, Array]:
        """images [B, H, W, C] in [-1, 1] -> (features [B, D], logits [B, K])."""
        ...


class ConvClassifier(nn.Module):
    """Small conv net: per stage conv3x3-GroupNorm-swish, 2x2 average pool; then a dense layer.

    `pooling='flatten'` keeps where things are in the last feature map (sleeves, collars: what
    tells a shirt from a T-shirt) but fixes the input size; 'mean' pools globally (any size).
    """

    num_classes: int = 10
    widths: Sequence[int] = (32, 64, 128)
    feature_dim: int = 128
    norm_groups: int = 8
    pooling: str = "flatten"

    @nn.compact
    def __call__(self, images: Array) -> tuple[Array, Array]:
        """images [B, H, W, C] -> (features [B, feature_dim], logits [B, num_classes])."""
        x = images
        for i, width in enumerate(self.widths):
            # Our conv: its input gradient stays fast inside the sampler's loop (models/conv.py).
            conv = nn.Conv(
                width, (3, 3), name=f"conv{i}", conv_general_dilated=conv_general_dilated
            )
            x = conv(x)
            # GroupNorm, not BatchNorm: normalises per sample, so apply has no batch state.
            x = nn.GroupNorm(num_groups=min(self.norm_groups, width), name=f"norm{i}")(x)
            x = nn.swish(x)
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        if self.pooling == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif self.pooling == "mean":
            x = jnp.mean(x, axis=(1, 2))
        else:
            raise ValueError(f"pooling must be 'flatten' or 'mean', not {self.pooling!r}.")
        features = nn.swish(nn.Dense(self.feature_dim, name="features")(x))
        logits = nn.Dense(self.num_classes, name="logits")(features)
        return features, logits


class _Head(nn.Module):
    """One epistemic head: features [B, D] -> logits [B, K] (linear, or one hidden layer)."""

    num_classes: int
    hidden: int = 0

    @nn.compact
    def __call__(self, features: Array) -> Array:
        x = features
        if self.hidden:
            x = nn.swish(nn.Dense(self.hidden, name="hidden")(x))
        return nn.Dense(self.num_classes, name="out")(x)


class EpistemicHeads(nn.Module):
    """M independent heads on the frozen predictor's features, vectorised: [B, D] -> [B, M, K].

    The backbone stays frozen because the heads are trained on precomputed features and only
    the heads' params are optimised; the input path is NOT stop_gradient-ed, since Longtail
    Guidance needs d(epistemic)/d(image) through the backbone.
    """

    num_classes: int = 10
    num_heads: int = 8
    hidden: int = 0

    @nn.compact
    def __call__(self, features: Array) -> Array:
        heads = nn.vmap(
            _Head,
            variable_axes={"params": 0},  # params stacked [M, ...]
            split_rngs={"params": True},  # each head its own init
            in_axes=None,  # all heads read the same features
            out_axes=1,
            axis_size=self.num_heads,
        )
        return heads(num_classes=self.num_classes, hidden=self.hidden, name="heads")(features)


# ---------------------------------------------------------------- input checks


def check_images(images: Any, channels: int | None = None) -> None:
    """Fails early on images the predictor cannot score, with a message naming the fix."""
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(
            f"images must be a batch [B, H, W, C] (NHWC); got shape {shape}. Add the batch axis "
            "with images[None] or the channel axis with images[..., None]."
        )
    if channels is not None and shape[-1] != channels:
        raise ValueError(
            f"images have {shape[-1]} channels but the predictor expects {channels} (NHWC, "
            "channels last); convert e.g. RGB to grey with images.mean(-1, keepdims=True), or "
            "transpose NCHW to NHWC."
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f"images are {images.dtype}; pass floats in [-1, 1], e.g. uint8 / 127.5 - 1."
        )
    if isinstance(images, jax.core.Tracer):
        return  # values unknown under jit/grad: the range is checked where images are concrete
    lo, hi = float(jnp.min(images)), float(jnp.max(images))
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"images lie in [{lo:.3g}, {hi:.3g}] but the predictor expects [-1, 1]; rescale, "
            "e.g. x / 127.5 - 1 for uint8 or 2 * x - 1 for [0, 1] floats."
        )


# ---------------------------------------------------------------- scorer

Scorer = Callable[..., dict[str, Array]]


def make_scorer(
    predictor_apply: Predictor,
    heads_apply: Callable[[Params, Array], Array] | None = None,
    *,
    channels: int | None = 1,
    temperature: float = 1.0,
    return_outputs: bool = False,
) -> Scorer:
    """score(params{'predictor','heads'}, images[B,H,W,C], labels=None) -> {signal: [B]}.

    One backbone pass feeds the logit signals and the epistemic heads. `score.jitted` is the
    bare jitted function (no input checks) for use inside other jitted code; `score` itself
    checks shapes always and the [-1, 1] range when the images are concrete arrays.
    """

    def _score(params: Mapping[str, Params], images: Array, labels: Array | None = None):
        features, logits = predictor_apply(params["predictor"], images)
        member_logits = None
        if heads_apply is not None:
            member_logits = heads_apply(params["heads"], features)
        out = signals.longtail_signals(
            logits, labels=labels, member_logits=member_logits, temperature=temperature
        )
        if return_outputs:
            out["logits"], out["features"] = logits, features
        return out

    jitted = jax.jit(_score)

    def score(params: Mapping[str, Params], images: Array, labels: Array | None = None):
        check_images(images, channels)
        return jitted(params, images, labels)

    score.jitted = jitted
    return score


def module_apply(module: nn.Module) -> Callable[[Params, Array], Any]:
    """A linen module as a pure `apply(params, x)` (params = the 'params' collection)."""
    return lambda params, x: module.apply({"params": params}, x)


# ---------------------------------------------------------------- shipped bundle


@dataclasses.dataclass(frozen=True)
class PredictorBundle:
    """A trained predictor (+ optional epistemic heads), ready to score images.

    `predictor` is our ConvClassifier (msgpack bundles) or None for a user's predictor, whose
    pure `apply_fn(params, images) -> (features, logits)` is given instead. metadata holds
    'classes' (names, in class-id order) and 'input' (the adapter fields, e.g. 'shape').
    """

    predictor: ConvClassifier | None
    heads: EpistemicHeads | None
    params: dict[str, Params]
    metadata: dict[str, Any]
    apply_fn: Predictor | None = None

    # Cached: one function object per bundle, so jax.jit of it compiles once, not per call.
    @functools.cached_property
    def predictor_apply(self) -> Predictor:
        return self.apply_fn if self.apply_fn is not None else module_apply(self.predictor)

    @functools.cached_property
    def adapted_apply(self) -> Predictor:
        """apply(params, images [B,H,W,C] in [-1,1] at any size) through the input adapter."""
        apply, adapter = self.predictor_apply, self.input_adapter
        return lambda params, images: apply(params, adapters.adapt(images, adapter))

    @functools.cached_property
    def heads_apply(self) -> Callable[[Params, Array], Array] | None:
        return None if self.heads is None else module_apply(self.heads)

    @property
    def num_classes(self) -> int:
        """K: the predictor's module, else the number of class names."""
        if self.predictor is not None:
            return int(self.predictor.num_classes)
        return len(self.metadata["classes"])

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names in class-id order (metadata 'classes'; class_<i> when the bundle has none)."""
        return tuple(str(n) for n in self.metadata.get("classes", ())) or tuple(
            f"class_{i}" for i in range(self.num_classes)
        )

    def class_index(self, name: str) -> int:
        """The class id of a class name (case-insensitive), -1 if the predictor has none."""
        lowered = [n.lower() for n in self.class_names]
        return lowered.index(name.lower()) if name.lower() in lowered else -1

    @property
    def input_adapter(self) -> adapters.InputAdapter:
        """What the predictor takes: metadata['input'] ('shape' (h, w, c) or adapter fields)."""
        spec = dict(self.metadata.get("input") or {})
        shape = spec.pop("shape", None)
        spec = {k: v for k, v in spec.items() if k not in ("layout",)}
        if isinstance(spec.get("range"), list | tuple):  # [-1.0, 1.0] in older bundles
            spec["range"] = "[0,1]" if list(spec["range"]) == [0.0, 1.0] else "[-1,1]"
        if shape is not None:
            spec.setdefault("size", tuple(shape[:2]))
            spec.setdefault("channels", int(shape[2]))
        return adapters.InputAdapter.from_config(spec)

    def scorer(self, **kwargs) -> Scorer:
        """`make_scorer` for this bundle; call as score(bundle.params, images)."""
        kwargs.setdefault("channels", self.input_adapter.channels or None)
        return make_scorer(self.predictor_apply, self.heads_apply, **kwargs)


def bundle_from_apply(
    apply_fn: Predictor,
    params: Params,
    class_names: Sequence[str],
    *,
    input: Mapping[str, Any] | None = None,
    heads: EpistemicHeads | None = None,
    heads_params: Params | None = None,
) -> PredictorBundle:
    """A user's predictor as a bundle: `apply_fn(params, images [B,H,W,C]) -> (features, logits)`.

    `input` holds the adapter fields (ltg_jax.adapters.InputAdapter: size, crop, channels,
    range, normalise, mean, std) that map decoded images to what `apply_fn` takes.
    """
    adapters.InputAdapter.from_config(input)  # reject bad fields now
    tree = {"predictor": params} | ({"heads": heads_params} if heads is not None else {})
    metadata = {"classes": [str(n) for n in class_names], "input": dict(input or {})}
    return PredictorBundle(None, heads, tree, metadata, apply_fn=apply_fn)


def load_predictor(
    spec: str | os.PathLike | PredictorBundle, heads: str | os.PathLike | None = None
) -> PredictorBundle:
    """A bundle from a msgpack file, or from `package.module:factory` (an import path).

    The factory takes no arguments and returns a PredictorBundle (see `bundle_from_apply`)
    or a tuple (apply_fn, params, class_names[, input adapter fields]). `heads` adds epistemic
    heads saved by `save_heads` (what `train.epistemic_head` writes for such predictors).
    """
    if isinstance(spec, PredictorBundle):
        bundle = spec
    elif ":" in str(spec) and not Path(str(spec)).exists() and not str(spec).endswith(".msgpack"):
        bundle = _from_factory(str(spec))
    else:
        bundle = load_predictor_bundle(spec)
    if heads:
        module, heads_params, _ = load_heads(heads)
        if module.num_classes != bundle.num_classes:
            raise ValueError(
                f"the heads {heads} have {module.num_classes} classes, the predictor "
                f"{bundle.num_classes}; train them on this predictor (train.epistemic_head)"
            )
        bundle = dataclasses.replace(
            bundle, heads=module, params={**bundle.params, "heads": heads_params}
        )
    checks.require_finite(
        bundle.params, f"the predictor's parameters ({spec}{f' + {heads}' if heads else ''})",
        "it was saved from a diverged run: retrain it or use another bundle",
    )  # fmt: skip
    return bundle


def save_heads(
    path: str | os.PathLike,
    heads: EpistemicHeads,
    params: Params,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Epistemic heads alone (config, params, metadata) as one msgpack file."""
    tree = {
        "format": HEADS_FORMAT,
        "heads_config": _module_config(heads),
        "metadata": io.to_jsonable(dict(metadata or {})),
        "params": jax.tree.map(lambda x: np.asarray(x, np.float32), params),
    }
    return io.atomic_write_bytes(path, serialization.msgpack_serialize(tree))


def load_heads(path: str | os.PathLike) -> tuple[EpistemicHeads, Params, dict[str, Any]]:
    """(heads module, params, metadata) of a file written by `save_heads`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no epistemic heads at {path}; train them with train.epistemic_head"
        )
    tree = serialization.msgpack_restore(path.read_bytes())
    if tree.get("format") != HEADS_FORMAT:
        raise BundleFormatError(f"{path} is not a {HEADS_FORMAT} file")
    module = EpistemicHeads(**_as_module_kwargs(tree["heads_config"]))
    params = jax.tree.map(jnp.asarray, tree["params"])
    return module, params, dict(tree.get("metadata") or {})


def _from_factory(spec: str) -> PredictorBundle:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"predictor {spec!r}: cannot import {attr!r} from {module_name!r} ({e}); give "
            "`package.module:factory` with the package importable (installed or on PYTHONPATH)"
        ) from e
    made = factory()
    if isinstance(made, PredictorBundle):
        return made
    if isinstance(made, tuple) and len(made) in (3, 4):
        return bundle_from_apply(*made[:3], input=made[3] if len(made) == 4 else None)
    raise ValueError(
        f"predictor {spec!r}: the factory returned {type(made).__name__}; return a "
        "PredictorBundle (ltg_jax.predictor.bundle_from_apply) or (apply_fn, params, "
        "class_names[, input])"
    )


def _module_config(module: nn.Module) -> dict[str, Any]:
    return {
        field.name: list(v) if isinstance(v := getattr(module, field.name), tuple | list) else v
        for field in dataclasses.fields(module)
        if field.name not in ("parent", "name")
    }


def save_predictor_bundle(
    path: str | os.PathLike,
    predictor: ConvClassifier,
    params: Mapping[str, Params],
    heads: EpistemicHeads | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Writes predictor (+ heads) config and params as one msgpack file (f32, under 1 MB here).

    Format: {'format', 'predictor_config', 'heads_config', 'metadata', 'params': {'predictor',
    'heads'}}; plain msgpack (flax.serialization), so it loads without orbax or a workdir.
    """
    tree = {
        "format": BUNDLE_FORMAT,
        "predictor_config": _module_config(predictor),
        "heads_config": None if heads is None else _module_config(heads),
        "metadata": io.to_jsonable(dict(metadata or {})),
        "params": jax.tree.map(lambda x: np.asarray(x, np.float32), dict(params)),
    }
    return io.atomic_write_bytes(path, serialization.msgpack_serialize(tree))


def load_predictor_bundle(path: str | os.PathLike) -> PredictorBundle:
    """Reads a bundle written by `save_predictor_bundle` (e.g. ltg_jax/assets/*.msgpack)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no predictor bundle at {path}; train one with `python -m train.predictor` and "
            "`python -m train.epistemic_head` (it writes predictor_bundle.msgpack in its workdir)."
        )
    tree = serialization.msgpack_restore(path.read_bytes())
    if tree.get("format") != BUNDLE_FORMAT:
        raise BundleFormatError(
            f"{path} is not a {BUNDLE_FORMAT} file (format {tree.get('format')!r}); a msgpack "
            "bundle holds our ConvClassifier: give any other predictor as `package.module:factory`"
        )
    if set(tree.get("predictor_config") or {}) - {
        f.name for f in dataclasses.fields(ConvClassifier)
    }:
        raise BundleFormatError(
            f"{path}: predictor_config {sorted(tree['predictor_config'])} is not a "
            "ConvClassifier's; give this predictor as `package.module:factory` instead"
        )
    predictor = ConvClassifier(**_as_module_kwargs(tree["predictor_config"]))
    heads_config = tree.get("heads_config")
    heads = None if heads_config is None else EpistemicHeads(**_as_module_kwargs(heads_config))
    params = jax.tree.map(jnp.asarray, tree["params"])
    return PredictorBundle(predictor, heads, params, dict(tree.get("metadata") or {}))


def _as_module_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    # msgpack returns lists (and dict-of-index for some trees): modules want hashable tuples.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
