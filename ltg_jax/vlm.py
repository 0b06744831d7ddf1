"""Optional VLM explanations of mined clusters via any OpenAI-compatible chat endpoint.

Standard library only: the request is an OpenAI `/v1/chat/completions` body with images as PNG
data URLs, which vLLM, llama.cpp server, Ollama and LM Studio accept for LLaVA-class models.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

import numpy as np

_FLAG = "--config.report.vlm"


class VLMError(RuntimeError):
    """A VLM request failed; the message names the endpoint, the cause and the fix."""


@dataclass(frozen=True)
class VLMConfig:
    """Where and how to ask: endpoint is the base URL, e.g. http://127.0.0.1:8000/v1."""

    endpoint: str
    model: str
    api_key_env: str = ""
    timeout_s: float = 60.0
    max_tokens: int = 300
    temperature: float = 0.0
    retries: int = 1

    def __post_init__(self):
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"VLM endpoint must be an http(s) base URL such as http://127.0.0.1:8000/v1, "
                f"got {self.endpoint!r}; set {_FLAG}.endpoint"
            )
        if not self.model:
            raise ValueError(f"VLM model is empty; set {_FLAG}.model to a model the server serves")
        if self.timeout_s <= 0 or self.retries < 0 or self.max_tokens < 1:
            raise ValueError(
                f"need timeout_s > 0, retries >= 0 and max_tokens >= 1, got {self.timeout_s}, "
                f"{self.retries}, {self.max_tokens}; fix {_FLAG}.*"
            )

    @property
    def url(self) -> str:
        """The chat completions URL: <endpoint>/chat/completions."""
        return self.endpoint.rstrip("/") + "/chat/completions"


def png_data_url(image: np.ndarray, min_size: int = 128) -> str:
    """data:image/png;base64 URL of image [H, W, C] in [-1, 1] (C = 1 or 3), upscaled so that
    its shorter side is >= min_size by an integer nearest-neighbour factor."""
    from PIL import Image

    x = np.asarray(image, np.float64)
    if x.ndim != 3 or x.shape[-1] not in (1, 3):
        raise ValueError(f"image must be [H, W, C] with C = 1 or 3, got shape {x.shape}")
    u8 = np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    factor = max(1, math.ceil(min_size / min(u8.shape[:2])))
    u8 = u8.repeat(factor, axis=0).repeat(factor, axis=1)
    pil = Image.fromarray(u8[..., 0], "L") if u8.shape[-1] == 1 else Image.fromarray(u8, "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_request(
    config: VLMConfig, prompt: str, images: Sequence[np.ndarray] = ()
) -> dict[str, Any]:
    """The JSON body: one user message, text first, then each image [H, W, C] as a PNG data URL.

    Without images the content is the plain prompt string, which every server accepts.
    """
    if images:
        content: Any = [{"type": "text", "text": prompt}] + [
            {"type": "image_url", "image_url": {"url": png_data_url(im)}} for im in images
        ]
    else:
        content = prompt
    return {
        "model": config.model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
    }


def request_headers(config: VLMConfig) -> dict[str, str]:
    """Content-Type, plus Authorization: Bearer $api_key_env when api_key_env is set."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if config.api_key_env:
        key = os.environ.get(config.api_key_env, "")
        if not key:
            raise VLMError(
                f"VLM at {config.url}: environment variable {config.api_key_env} (the API key) "
                f"is not set; export it, or set {_FLAG}.api_key_env='' for a server without keys"
            )
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _http_hint(config: VLMConfig, status: int) -> str:
    """What to check for an HTTP error status."""
    if status in (401, 403):
        return f"check the API key in ${config.api_key_env or '<unset>'} ({_FLAG}.api_key_env)"
    if status == 404:
        return (
            f"check that {_FLAG}.endpoint is the base URL ending in /v1 (requests go to "
            f"<endpoint>/chat/completions) and that model {config.model!r} is served"
        )
    if status >= 500:
        return "the server failed; see its log (out of memory? too many images per request?)"
    return f"check that model {config.model!r} is served and accepts image input"


def parse_answer(config: VLMConfig, raw: bytes) -> str:
    """choices[0].message.content (stripped) of a raw response body; VLMError otherwise."""
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        snippet = raw[:200].decode("utf-8", "replace")
        raise VLMError(
            f"VLM at {config.url} answered with a body that is not JSON ({e}): {snippet!r}; "
            f"is {config.endpoint} an OpenAI-compatible /v1 endpoint?"
        ) from e
    try:
        content = payload["choices"][0]["message"]["content"]
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p["text"] for p in content if p.get("type") == "text")
        if not isinstance(content, str):
            raise TypeError(f"content is {type(content).__name__}")
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        snippet = json.dumps(payload)[:200]
        raise VLMError(
            f"VLM at {config.url} answered JSON without choices[0].message.content "
            f"({type(e).__name__}: {e}): {snippet}; is {config.endpoint} an OpenAI-compatible "
            "/v1 endpoint?"
        ) from e
    return content.strip()


def _post_once(config: VLMConfig, data: bytes, headers: dict[str, str]) -> bytes:
    """The raw body of one POST to config.url; urllib/socket errors propagate."""
    req = urllib.request.Request(config.url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=config.timeout_s) as resp:
        return resp.read()


def _failure(config: VLMConfig, err: BaseException) -> tuple[VLMError, bool]:
    """A VLMError naming the cause and fix of err, and whether a retry may help."""
    if isinstance(err, urllib.error.HTTPError):
        body = err.read()[:200].decode("utf-8", "replace") if err.fp else ""
        msg = f"VLM at {config.url} answered HTTP {err.code} {err.reason}: {body!r}; "
        return VLMError(msg + _http_hint(config, err.code)), err.code >= 500
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, TimeoutError):
        return VLMError(
            f"VLM at {config.url}: no answer within timeout_s={config.timeout_s:g} s; raise "
            f"{_FLAG}.timeout_s or use a smaller model"
        ), True
    return VLMError(
        f"VLM at {config.url}: could not connect ({type(reason).__name__}: {reason}); "
        f"is the server running at {config.endpoint}?"
    ), False


def ask(config: VLMConfig, prompt: str, images: Sequence[np.ndarray] = ()) -> str:
    """The model's answer to prompt with images [H, W, C] in [-1, 1]; retries timeouts and 5xx."""
    data = json.dumps(chat_request(config, prompt, images)).encode("utf-8")
    headers = request_headers(config)
    for attempt in range(config.retries + 1):
        try:
            raw = _post_once(config, data, headers)
        except (urllib.error.URLError, OSError, HTTPException) as e:
            error, retryable = _failure(config, e)
            if retryable and attempt < config.retries:
                continue
            if attempt:
                error = VLMError(f"{error} (after {attempt + 1} attempts)")
            raise error from e
        return parse_answer(config, raw)
    raise AssertionError("unreachable")


def explain_cluster(
    config: VLMConfig,
    class_name: str,
    hard_images: Sequence[np.ndarray],
    reference_images: Sequence[np.ndarray],
) -> str:
    """1-2 sentences on what hard images [H, W, C] share that typical (unguided) ones do not."""
    n, m = len(hard_images), len(reference_images)
    if n == 0 or m == 0:
        raise ValueError(
            f"explain_cluster needs hard and reference images, got {n} and {m}; pass unguided "
            "samples of the same class as reference_images"
        )
    prompt = (
        f"The first {n} images are generated images of the class '{class_name}' that an image "
        f"classifier finds hard (it often gets them wrong). The last {m} images are typical "
        f"(unguided) generated images of the same class. What do the {n} hard images share "
        f"that the {m} typical ones do not? Consider appearance, pose, size, position in the "
        "frame, lighting and background clutter. Answer in 1-2 sentences and describe only "
        "what you can see."
    )
    return ask(config, prompt, [*hard_images, *reference_images])


def summarize_blind_spots(
    config: VLMConfig, class_name: str, cluster_answers: Sequence[str]
) -> str:
    """1-3 sentences (text only) on the predictor's blind spots for a class, from cluster notes."""
    if not cluster_answers:
        raise ValueError("summarize_blind_spots needs at least one cluster description")
    listed = "\n".join(f"{i + 1}. {a.strip()}" for i, a in enumerate(cluster_answers))
    prompt = (
        f"An image classifier was probed with generated images of the class '{class_name}'. "
        "Its hardest images were grouped into clusters, and each cluster was compared with "
        f"typical images of the class:\n{listed}\n"
        f"Summarize in 1-3 sentences the classifier's blind spots for '{class_name}': which "
        "kinds of images of this class it struggles with. Use only what the descriptions say."
    )
    return ask(config, prompt)


def targeted_prompts(config: VLMConfig, class_name: str, blind_spots: str, count: int = 4) -> list:
    """Up to `count` text-to-image prompts for images of a class showing its blind spots.

    For text pipelines: each prompt can drive a targeted LTG run (--config.prompt=...).
    """
    prompt = (
        f"An image classifier struggles with these images of the class '{class_name}': "
        f"{blind_spots.strip()}\nWrite {count} short text-to-image prompts, one per line and "
        f"nothing else, each for a photo of a {class_name} showing one of these difficulties."
    )
    lines = [
        ln.strip().lstrip("-*0123456789.) ").strip() for ln in ask(config, prompt).splitlines()
    ]
    return [ln for ln in lines if ln][:count]
