"""`LTGPipeline`: Longtail Guidance in one call, in diffusers' vocabulary.

    pipe = LTGPipeline.from_pretrained("/models/sd15", predictor="my_pkg.models:classifier")
    out = pipe(prompts=["a photo of a cat"] * 4, ltg_scale=2.0, signal="entropy", seed=0)
    out.images      # [4, 512, 512, 3] float32 in [0, 1]
    out.signals     # {'entropy': [4], ..., 'guidance': [4]} of the final images
    out.metadata    # one dict per sample: index, seed, class or prompt, settings

Defaults are ltg_jax.sampling's, the same as the command line's (configs/ltg.py). Samplers
are jitted once per (resolution, steps, solver, CFG scale, signal, guidance switches, batch)
and cached on the pipeline; `ltg_scale` is a runtime argument, so changing it never
recompiles. Sample i draws its noise from fold_in(key(seed), i), as in `sample.ltg`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from ltg_jax import adapters, checks, diffusion, ltg_sampling, parallel, sampling, signals, weights
from ltg_jax import predictor as predictors


class LTGOutput(NamedTuple):
    """What a pipeline call returns (numpy, this process's samples in index order)."""

    images: np.ndarray  # [N, H, W, C] float32 in [0, 1]
    signals: dict[str, np.ndarray]  # name -> [N]: every longtail signal and 'guidance'
    metadata: list[dict[str, Any]]  # per sample


class LTGPipeline:
    """A diffusers-format folder + a predictor, sampled with Longtail Guidance."""

    def __init__(
        self,
        pipe: weights.Pipeline,
        predictor_bundle: predictors.PredictorBundle,
        *,
        mesh: Mesh | None = None,
        input_adapter: adapters.InputAdapter | Mapping[str, Any] | None = None,
    ):
        if jax.process_count() > 1:
            raise ValueError(
                "LTGPipeline runs on one process; for multi-host runs use `ltg-sample` "
                "(python -m sample.ltg), which shards the work over every process"
            )
        self.pipe = pipe
        self.predictor = predictor_bundle
        self.mesh = parallel.data_mesh() if mesh is None else mesh
        if isinstance(input_adapter, Mapping):
            input_adapter = adapters.InputAdapter.from_config(input_adapter)
        self.input_adapter = input_adapter or predictor_bundle.input_adapter
        self.kind = "class" if diffusion.is_class_conditional(pipe) else "text"
        self._params = parallel.replicate(
            diffusion.guided_params(diffusion.pipeline_params(pipe), predictor_bundle.params),
            self.mesh,
        )
        self._score = diffusion.adapted_scorer(predictor_bundle, self.input_adapter)
        self._samplers: dict[tuple, Any] = {}

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        predictor: str | os.PathLike | predictors.PredictorBundle | None = None,
        *,
        heads: str | os.PathLike | None = None,
        dtype: str = "float32",
        mesh: Mesh | None = None,
        remat: str = "none",
        variant: str | None = None,
        input_adapter: adapters.InputAdapter | Mapping[str, Any] | None = None,
        param_dtype: str = "float32",
    ) -> LTGPipeline:
        """Load a folder (ours, Stable Diffusion 1.x/2.x or SDXL) and a predictor.

        `predictor`: a bundle, a msgpack bundle path or `package.module:factory` (default:
        the shipped Fashion-MNIST-LT predictor with its epistemic heads); `heads`: epistemic
        heads trained for it (`train.epistemic_head` writes heads.msgpack). `dtype` is the
        compute dtype ('float32' | 'bfloat16') and `param_dtype` how the weights are held
        (bfloat16 halves their memory); the predictor's input adapter may be replaced.
        """
        for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
            if value not in ltg_sampling.DTYPES:
                raise ValueError(f"{name}={value!r}; use one of {sorted(ltg_sampling.DTYPES)}")
        bundle = predictors.load_predictor(
            predictor if predictor is not None else predictors.SHIPPED_PREDICTOR, heads
        )
        mesh = parallel.data_mesh() if mesh is None else mesh
        pipe = weights.load_pipeline(
            folder, variant=variant, dtype=ltg_sampling.DTYPES[dtype], remat=remat,
            param_dtype=ltg_sampling.DTYPES[param_dtype],
            place=lambda x: parallel.replicate(x, mesh),  # onto the mesh: one copy
        )  # fmt: skip
        return cls(pipe, bundle, mesh=mesh, input_adapter=input_adapter)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The predictor's class names (class-conditional folders share its label set)."""
        return self.predictor.class_names

    def __call__(
        self,
        class_labels: Sequence[int | str] | None = None,
        prompts: Sequence[str] | None = None,
        *,
        num_inference_steps: int = sampling.DEFAULT_NUM_STEPS,
        guidance_scale: float | None = None,
        ltg_scale: float = sampling.DEFAULT_LTG_SCALE,
        signal: str | Mapping[str, float] = sampling.DEFAULT_SIGNAL,
        grad_through: str = sampling.DEFAULT_GRAD_THROUGH,
        normalise: str = sampling.DEFAULT_NORMALISE,
        height: int | None = None,
        width: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        negative_prompt: str = "",
        solver: str = sampling.DEFAULT_SOLVER,
        eta: float = sampling.DEFAULT_ETA,
        progress: bool = True,
    ) -> LTGOutput:
        """Generate one image per class label (class folders) or per prompt (text folders).

        `guidance_scale` is classifier-free guidance (default 3 for our class models, 7.5 for
        Stable Diffusion); `ltg_scale` is the Longtail Guidance weight w (0 = unguided).
        Text folders take `class_labels` too (names or the predictor's ids, one per prompt):
        the class each prompt shows, which the 'loss' signal scores against.
        """
        resolution = None if height is None and width is None else (height, width)
        if resolution is not None and None in resolution:
            raise ValueError("give both height and width, or neither (the model's own size)")
        cond, labels, described = self._conditioning(
            class_labels, prompts, negative_prompt, resolution
        )
        n = len(labels)
        weights_ = diffusion.parse_signal(signal)
        if "loss" in weights_ and (labels < 0).any():
            raise ValueError("signal 'loss' needs class_labels the predictor knows, one per prompt")
        cfg_scale = (
            sampling.DEFAULT_CFG_SCALE[self.kind] if guidance_scale is None else guidance_scale
        )
        checks.check_config_finite(
            {"ltg_scale": float(ltg_scale), "guidance_scale": float(cfg_scale), "eta": float(eta)},
            "",
        )
        batch = batch_size or min(n, 8)
        batch = -(-batch // self.mesh.size) * self.mesh.size  # a multiple of the devices
        sampler = self._sampler(
            resolution, num_inference_steps, solver, eta, float(cfg_scale),
            tuple(sorted(weights_.items())), grad_through, normalise, ltg_scale != 0.0,
        )  # fmt: skip
        known = (labels >= 0).all()  # 'loss' is only defined where every class is known
        images, scores = [], {}
        batches = [np.arange(i, i + batch) for i in range(0, n, batch)]
        label = "ltg" if ltg_scale else "unguided"
        for idx in tqdm(batches, desc=label, unit="batch", disable=not progress):
            rows = np.minimum(idx, n - 1)  # the last batch repeats its last sample
            c = ltg_sampling.take_rows(cond, rows)
            out = sampler(self._params, rows.astype(np.int32), c, jax.random.key(seed), ltg_scale)
            keep = idx < n
            checks.require_finite(
                {"images": out.images}, f"the images of batch {idx.tolist()}",
                "lower ltg_scale or guidance_scale, or load in float32; the weights may be bad",
            )  # fmt: skip
            # Scored per batch: one compile for every call of this batch size.
            batch_scores = self._score(
                self.predictor.params, out.images, labels[rows] if known else None
            )
            for name, value in batch_scores.items():
                scores.setdefault(name, []).append(np.asarray(value)[keep])
            images.append(np.asarray(out.images)[keep])
        decoded = np.concatenate(images)
        scores = {name: np.concatenate(parts) for name, parts in scores.items()}
        scores["guidance"] = np.asarray(signals.weighted_signal(scores, weights_))
        settings = {
            "seed": int(seed),
            "ltg_scale": float(ltg_scale),
            "signal": dict(weights_),
            "guidance_scale": float(cfg_scale),
            "num_inference_steps": int(num_inference_steps),
            "height": int(decoded.shape[1]),
            "width": int(decoded.shape[2]),
        }
        metadata = [{"index": i, **described[i], **settings} for i in range(n)]
        return LTGOutput(np.clip(decoded / 2 + 0.5, 0.0, 1.0), scores, metadata)

    # ------------------------------------------------------------ helpers

    def _class_id(self, label: int | str) -> int:
        """A class id from an id or a name (the predictor's names, case-insensitive)."""
        if isinstance(label, str):
            index = self.predictor.class_index(label)
            if index < 0:
                raise ValueError(f"class {label!r} is not one of {list(self.class_names)}")
            return index
        if not 0 <= int(label) < self.predictor.num_classes:
            raise ValueError(f"class id {label} is not in [0, {self.predictor.num_classes})")
        return int(label)

    def _conditioning(self, class_labels, prompts, negative_prompt, resolution):
        """(sampler cond [N, ...], predictor labels [N] (-1 unknown), per-sample descriptions)."""
        if self.kind == "class":
            if prompts is not None or class_labels is None:
                raise ValueError("this folder is class-conditional: pass class_labels, not prompts")
            ids = np.asarray([self._class_id(c) for c in class_labels], np.int32)
            k = self.pipe.class_embedder.num_classes
            if (ids >= k).any():
                raise ValueError(f"class ids must be < {k}, the folder's number of classes")
            described = [{"class_id": int(i), "class_name": self.class_names[i]} for i in ids]
            return ids, ids, described
        if prompts is None or isinstance(prompts, str):
            raise ValueError("this folder is text-conditional: pass prompts=[...] (a list)")
        if class_labels is None:
            labels = np.full(len(prompts), -1, np.int32)
        elif len(class_labels) != len(prompts):
            raise ValueError("give one class label per prompt (or none)")
        else:
            labels = np.asarray([self._class_id(c) for c in class_labels], np.int32)
        cond = diffusion.encode_prompts(
            self.pipe, list(prompts), labels, negative_prompt, resolution
        )
        described = [
            {"prompt": p, "class_id": int(c), "class_name": self.class_names[c] if c >= 0 else None}
            for p, c in zip(prompts, labels, strict=True)
        ]
        return cond, labels, described

    def _sampler(self, resolution, steps, solver, eta, cfg_scale, signal, grad, norm, guided):
        """The jitted sampler of these static settings, built once and cached."""
        key = (resolution, steps, solver, eta, cfg_scale, signal, grad, norm, guided)
        if key not in self._samplers:
            config = sampling.SamplerConfig.from_config(
                {
                    "scheduler": self.pipe.scheduler_config or {},
                    "num_steps": int(steps),
                    "solver": solver,
                    "eta": float(eta),
                    "cfg_scale": cfg_scale,
                    # w = 1: ltg_scale scales it at run time (0 gets the unguided program).
                    "guidance": {"w": 1.0 if guided else 0.0, "grad_through": grad,
                                 "normalise": norm},
                }
            )  # fmt: skip
            base = diffusion.conditional_models(self.pipe, resolution)
            signal_fn = diffusion.predictor_signal(self.predictor, dict(signal), self.input_adapter)
            models = diffusion.with_signal(base, signal_fn)
            self._samplers[key] = sampling.make_sampler(config, models, self.mesh)
        return self._samplers[key]
