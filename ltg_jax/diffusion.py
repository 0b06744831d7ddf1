"""Adapters from a loaded diffusers-format pipeline (and a predictor) to the sampler's callables.

Class-conditional folders (ours): cond = class ids [B], the null class K is the CFG branch.
Text-conditional folders (Stable Diffusion): prompts are encoded once, outside the sampler, into
cond = {"context": [B,77,D], "uncond": [B,77,D], "label": [B]}; the CFG branch swaps in
"uncond" (the empty-prompt embedding), so the sampler stays one pure jitted function. SDXL adds
"text_embeds" / "uncond_text_embeds" [B,P] (the second encoder's pooled projection) and
"time_ids" [B,6] (original size, crop corner, target size) to the same dict.
`with_signal` plugs a longtail signal into either; its params are {"diffusion", "predictor"}.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ltg_jax import adapters, checks, models, predictor, sampling, signals, weights
from ltg_jax.models.defaults import fill_defaults

PyTree = Any
SignalFn = Callable[[PyTree, jax.Array, Any], jax.Array]
# Image size in pixels: None (the model's own), one int (square) or (height, width).
Resolution = int | Sequence[int] | None


def class_conditional_models(
    pipe: weights.Pipeline, resolution: Resolution = None
) -> sampling.SamplerModels:
    """Sampler callables of a class-conditional pipeline; params = {'unet','vae','class_embedder'}.

    The conditioning is the class id [B]; the null class (K) is the unconditional branch.
    `resolution` (height, width) in pixels defaults to the UNet's sample_size (see image_size).
    """
    unet, vae, embedder = pipe.unet, pipe.vae, pipe.class_embedder
    if embedder is None:
        raise ValueError(
            "this pipeline has no class_embedder/ (a text model?); use text_conditional_models"
        )
    scale = vae_scaling_factor(pipe)

    def eps_fn(params, z, t, labels):
        context = models.class_context(embedder, params["class_embedder"], labels)
        return models.unet_apply(unet, params["unet"], z, t, context)

    return sampling.SamplerModels(
        eps_fn=eps_fn,
        decode_fn=lambda params, z: models.decode_latents(vae, params["vae"], z, scale),
        signal_fn=None,
        null_cond=lambda labels: jnp.full_like(labels, embedder.num_classes),
        latent_shape=latent_shape(pipe, resolution),
    )


def text_conditional_models(
    pipe: weights.Pipeline, resolution: Resolution = None
) -> sampling.SamplerModels:
    """Sampler callables of a text-conditional (SD) pipeline; params = {'unet', 'vae'}.

    cond is the dict of `encode_prompts`; the text encoders never run inside the sampler.
    """
    unet, vae = pipe.unet, pipe.vae
    scale = vae_scaling_factor(pipe)

    def eps_fn(params, z, t, cond):
        added = {k: cond[k] for k in SDXL_COND} if unet.addition_time_embed_dim else None
        return models.unet_apply(unet, params["unet"], z, t, cond["context"], added)

    return sampling.SamplerModels(
        eps_fn=eps_fn,
        decode_fn=lambda params, z: models.decode_latents(vae, params["vae"], z, scale),
        signal_fn=None,
        null_cond=unconditional,
        latent_shape=latent_shape(pipe, resolution),
    )


SDXL_COND = ("text_embeds", "time_ids")  # the UNet's added_cond, from the cond dict


def unconditional(cond: Mapping[str, Any]) -> dict[str, Any]:
    """The CFG branch of a text cond: the negative prompt's context (and pooled embedding)."""
    out = {**cond, "context": cond["uncond"]}
    if "uncond_text_embeds" in cond:
        out["text_embeds"] = cond["uncond_text_embeds"]
    return out


def conditional_models(
    pipe: weights.Pipeline, resolution: Resolution = None
) -> sampling.SamplerModels:
    """`class_conditional_models` or `text_conditional_models`, whichever the folder is."""
    if is_class_conditional(pipe):
        return class_conditional_models(pipe, resolution)
    return text_conditional_models(pipe, resolution)


def is_class_conditional(pipe: weights.Pipeline) -> bool:
    """True for our class-conditional folders (a class_embedder/ component)."""
    return pipe.class_embedder is not None


def vae_scaling_factor(pipe: weights.Pipeline) -> float:
    """s_vae of the folder; an omitted field means diffusers' default 0.18215, as in diffusers."""
    return float(fill_defaults("vae", pipe.vae_config)["scaling_factor"])


def vae_factor(vae_config: Mapping[str, Any]) -> int:
    """Pixels per latent along each side (8 for Stable Diffusion)."""
    return 2 ** (len(fill_defaults("vae", vae_config)["block_out_channels"]) - 1)


def resolution_multiple(unet_config: Mapping[str, Any], vae_config: Mapping[str, Any]) -> int:
    """Pixels per latent times the UNet's total downsampling: image sizes must divide by it."""
    unet_levels = len(fill_defaults("unet", unet_config)["block_out_channels"])
    return vae_factor(vae_config) * 2 ** (unet_levels - 1)


def image_size(
    unet_config: Mapping[str, Any], vae_config: Mapping[str, Any], resolution: Resolution = None
) -> tuple[int, int]:
    """(height, width) in pixels: `resolution` (int or pair), else sample_size x VAE factor.

    As diffusers' `height`/`width`; each must be a multiple of `resolution_multiple`.
    """
    factor = vae_factor(vae_config)
    if resolution is None or resolution == () or resolution == 0:
        sample_size = fill_defaults("unet", unet_config)["sample_size"]
        if sample_size is None:
            raise ValueError(
                "unet/config.json has no sample_size; set the image size (config.resolution / "
                "height=, width=)"
            )
        size = (int(sample_size) * factor,) * 2
    elif isinstance(resolution, int):
        size = (resolution, resolution)
    else:
        size = tuple(int(r) for r in resolution)
        size = size * 2 if len(size) == 1 else size
    multiple = resolution_multiple(unet_config, vae_config)
    if len(size) != 2 or any(s <= 0 or s % multiple for s in size):
        raise ValueError(
            f"resolution {resolution!r}: height and width must be positive multiples of "
            f"{multiple} (VAE factor x UNet downsampling of this model)"
        )
    return size


def latent_shape(pipe: weights.Pipeline, resolution: Resolution = None) -> tuple[int, int, int]:
    """(h, w, c) of one latent at `resolution` (default: the UNet's sample_size)."""
    height, width = image_size(pipe.unet_config, pipe.vae_config, resolution)
    factor = vae_factor(pipe.vae_config)
    return (height // factor, width // factor, int(pipe.unet.in_channels))


def pipeline_params(pipe: weights.Pipeline) -> dict[str, PyTree]:
    """The params pytree the `*_conditional_models` callables expect."""
    params = {"unet": pipe.unet_params, "vae": pipe.vae_params}
    if pipe.class_embedder_params is not None:
        params["class_embedder"] = pipe.class_embedder_params
    return params


# ---------------------------------------------------------------- text conditioning


def encode_text(pipe: weights.Pipeline, prompts: Sequence[str]) -> np.ndarray:
    """Prompts -> the UNet's context [P, 77, D] f32 (computed once, outside the sampler)."""
    return text_features(pipe, prompts)["context"]


def text_features(pipe: weights.Pipeline, prompts: Sequence[str]) -> dict[str, np.ndarray]:
    """Prompts -> {'context' [P,77,D]}: CLIP's last hidden states (SD 1.x/2.x); for SDXL both
    encoders' penultimate states side by side [P,77,D1+D2] and 'text_embeds' [P,P2], the
    second encoder's projected pooled output (diffusers' StableDiffusionXLPipeline)."""
    if pipe.text_encoder is None or pipe.tokenizer is None:
        raise ValueError(
            "this pipeline has no text_encoder/ + tokenizer/; prompts need a Stable Diffusion "
            "folder (or pass class ids to a class-conditional folder)"
        )
    ids = models.tokenize(pipe.tokenizer, list(prompts))
    if pipe.text_encoder_2 is None:
        encode = jax.jit(lambda p, i: models.clip_encode(pipe.text_encoder, p, i))
        return {"context": np.asarray(encode(pipe.text_encoder_params, ids), np.float32)}
    if pipe.tokenizer_2 is None:
        raise ValueError("this SDXL pipeline has text_encoder_2/ but no tokenizer_2/")
    ids_2 = models.tokenize(pipe.tokenizer_2, list(prompts))

    @jax.jit
    def encode_both(p1, p2, i1, i2):
        hidden_1, _ = models.clip_penultimate(pipe.text_encoder, p1, i1)
        hidden_2, pooled = models.clip_penultimate(pipe.text_encoder_2, p2, i2)
        return jnp.concatenate([hidden_1, hidden_2], axis=-1), pooled

    context, pooled = encode_both(pipe.text_encoder_params, pipe.text_encoder_2_params, ids, ids_2)
    return {"context": np.asarray(context, np.float32), "text_embeds": np.asarray(pooled)}


def sdxl_time_ids(height: int, width: int) -> np.ndarray:
    """SDXL micro-conditioning [6]: original size, crop corner (0, 0), target size, as
    diffusers' default for an image generated at (height, width)."""
    return np.asarray([height, width, 0, 0, height, width], np.float32)


def encode_prompts(
    pipe: weights.Pipeline,
    prompts: Sequence[str],
    labels: Sequence[int] | np.ndarray | None = None,
    negative_prompt: str = "",
    resolution: Resolution = None,
) -> dict[str, np.ndarray]:
    """Per-sample text cond {'context' [B,77,D], 'uncond' [B,77,D], 'label' [B] int32}.

    Unique prompts are encoded once; `uncond` is the embedding of `negative_prompt` (default
    the empty prompt, as diffusers does); `label` is the class id the loss signal scores
    against (-1 when unknown). SDXL adds 'text_embeds', 'uncond_text_embeds' and 'time_ids'
    (for `resolution`); an empty negative prompt is all zeros there when the folder says
    `force_zeros_for_empty_prompt` (SDXL base does), as diffusers does without a negative prompt.
    """
    unique = list(dict.fromkeys([*prompts, negative_prompt]))
    table = text_features(pipe, unique)
    rows = np.asarray([unique.index(p) for p in prompts], np.int32)
    b = len(prompts)
    labels = np.full(b, -1, np.int32) if labels is None else np.asarray(labels, np.int32)
    if labels.shape != (b,):
        raise ValueError(f"labels must be [{b}] like the prompts, got shape {labels.shape}")
    zero_null = (
        "text_embeds" in table
        and negative_prompt == ""
        and bool((pipe.model_index or {}).get("force_zeros_for_empty_prompt", True))
    )

    def per_sample(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        null = features[unique.index(negative_prompt)]
        null = np.zeros_like(null) if zero_null else null
        return features[rows], np.broadcast_to(null, (b, *null.shape)).copy()

    cond = dict(zip(("context", "uncond"), per_sample(table["context"]), strict=True))
    cond["label"] = labels
    if "text_embeds" in table:
        cond["text_embeds"], cond["uncond_text_embeds"] = per_sample(table["text_embeds"])
        height, width = image_size(pipe.unet_config, pipe.vae_config, resolution)
        cond["time_ids"] = np.tile(sdxl_time_ids(height, width), (b, 1))
    return cond


def cond_labels(cond: Any) -> jax.Array:
    """Class ids [B] of a cond: the cond itself (class models) or cond['label'] (text models)."""
    return cond["label"] if isinstance(cond, Mapping) else cond


# ---------------------------------------------------------------- signals


def parse_signal(spec: str | Mapping[str, float]) -> dict[str, float]:
    """'entropy' | 'entropy:1,epistemic:0.5' | {'entropy': 1.0} -> {name: weight}."""
    if isinstance(spec, Mapping):
        weights_ = {str(k): float(v) for k, v in spec.items()}
    else:
        weights_ = {}
        for part in str(spec).replace(" ", "").split(","):
            if not part:
                continue
            name, _, w = part.partition(":")
            try:
                weights_[name] = float(w) if w else 1.0
            except ValueError:
                raise ValueError(f"signal weight {w!r} of {name!r} is not a number") from None
    unknown = sorted(set(weights_) - set(signals.SIGNAL_NAMES))
    if unknown or not weights_:
        raise ValueError(
            f"bad signal {spec!r}: unknown {unknown}; use one of {signals.SIGNAL_NAMES} or a "
            "weighted sum like 'entropy:1,epistemic:0.5'"
        )
    bad = [f"{k}:{v}" for k, v in weights_.items() if not math.isfinite(v)]
    if bad:
        raise checks.NonFiniteError(f"signal {spec!r}: weights {bad} are not finite numbers")
    return weights_


def predictor_signal(
    bundle: predictor.PredictorBundle,
    signal: str | Mapping[str, float],
    adapter: adapters.InputAdapter | None = None,
) -> SignalFn:
    """signal_fn(params{'predictor','heads'}, images [B,H,W,C], cond) -> weighted signal [B].

    `adapter` maps decoded images to what the predictor takes (default: the bundle's own);
    'loss' scores against the conditioning class.
    """
    weights_ = parse_signal(signal)
    if "epistemic" in weights_ and bundle.heads is None:
        raise ValueError("signal 'epistemic' needs a bundle with epistemic heads")
    score = adapted_scorer(bundle, adapter)

    def signal_fn(params, images, cond):
        labels = cond_labels(cond) if "loss" in weights_ else None
        return signals.weighted_signal(score(params, images, labels), weights_)

    return signal_fn


def adapted_scorer(
    bundle: predictor.PredictorBundle,
    adapter: adapters.InputAdapter | None = None,
    *,
    predictions: bool = False,
) -> Callable[..., dict[str, jax.Array]]:
    """Jitted score(params, decoded images [B,H,W,C] in [-1,1], labels|None) -> {signal: [B]}.

    `predictions` adds the predictor's verdict from the same pass: 'predicted_class' [B]
    (argmax) and 'predicted_prob' [B] (its softmax probability). Compiled once per shape:
    build it once and reuse it (a new closure would retrace).
    """
    adapter = bundle.input_adapter if adapter is None else adapter
    score = bundle.scorer(channels=None, return_outputs=predictions).jitted

    def _score(p, x, y=None):
        out = score(p, adapters.adapt(x, adapter), y)
        if predictions:
            probs = jax.nn.softmax(out.pop("logits").astype(jnp.float32), -1)
            out.pop("features")
            out["predicted_class"] = jnp.argmax(probs, -1).astype(jnp.int32)
            out["predicted_prob"] = jnp.max(probs, -1)
        return out

    return jax.jit(_score)


def with_signal(
    diffusion_models: sampling.SamplerModels, signal_fn: SignalFn
) -> sampling.SamplerModels:
    """The same sampler callables plus a signal; params become {'diffusion', 'predictor'}."""
    eps_fn, decode_fn = diffusion_models.eps_fn, diffusion_models.decode_fn
    guide = diffusion_models.guide_decode_fn
    return diffusion_models._replace(
        eps_fn=lambda params, z, t, cond: eps_fn(params["diffusion"], z, t, cond),
        decode_fn=lambda params, z: decode_fn(params["diffusion"], z),
        signal_fn=lambda params, images, cond: signal_fn(params["predictor"], images, cond),
        guide_decode_fn=None if guide is None else lambda params, z: guide(params["diffusion"], z),
    )


def with_tiny_decoder(
    diffusion_models: sampling.SamplerModels, tiny: models.AutoencoderTiny, scaling_factor: float
) -> sampling.SamplerModels:
    """Guidance through a tiny decoder (params['tiny_vae']); final images stay the full VAE's.

    `scaling_factor` is the tiny folder's own (TAESD: 1.0; it decodes diffusion latents).
    """
    return diffusion_models._replace(
        guide_decode_fn=lambda params, z: models.tiny_decode(
            tiny, params["tiny_vae"], z, scaling_factor
        )
    )


def guided_params(diffusion_params: PyTree, predictor_params: PyTree) -> dict[str, PyTree]:
    """The params pytree `with_signal` models expect."""
    return {"diffusion": diffusion_params, "predictor": predictor_params}
