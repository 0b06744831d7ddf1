"""CLIP BPE tokenizer with the `tokenizers` library, from tokenizer.json or vocab.json + merges.txt.

transformers 5 saves only tokenizer.json (the fast tokenizer's full definition), read as it
is. Older folders ship vocab.json + merges.txt, from which we build what transformers'
CLIPTokenizer does: NFC + whitespace collapse + lowercase, CLIP's split
regex, byte-level BPE with the `</w>` end-of-word suffix, <|startoftext|> ... <|endoftext|>,
special tokens (including the pad token, "!" for SD 2.x) matched before BPE, padded and
truncated to `model_max_length` (77).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import BPE

_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
    r"""[^\s\p{L}\p{N}]+"""
)


def _token(value: str | dict | None, default: str) -> str:
    """tokenizer_config.json stores special tokens as strings or AddedToken dicts."""
    if value is None:
        return default
    return value["content"] if isinstance(value, dict) else value


def tokenizer_files_problem(folder: str | pathlib.Path) -> str | None:
    """Why `folder` cannot give a CLIP tokenizer (None when it can); reads no vocabulary."""
    folder = pathlib.Path(folder)
    if (folder / "tokenizer.json").is_file():
        return None
    missing = [n for n in ("vocab.json", "merges.txt") if not (folder / n).is_file()]
    if missing:
        return (
            f"{folder} has neither tokenizer.json nor {' + '.join(missing)}: the CLIP tokenizer "
            "needs tokenizer.json (transformers 5) or vocab.json + merges.txt; copy them from "
            "the original model's tokenizer/ folder"
        )
    return None


def _special_tokens(folder: pathlib.Path) -> dict:
    """special_tokens_map.json updated by tokenizer_config.json (the latter wins)."""
    cfg: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            cfg.update(json.loads((folder / name).read_text()))
    return cfg


def load_clip_tokenizer(folder: str | pathlib.Path) -> Tokenizer:
    """Tokenizer of a diffusers `tokenizer/` folder, padded and truncated to model_max_length."""
    folder = pathlib.Path(folder)
    problem = tokenizer_files_problem(folder)
    if problem:
        raise FileNotFoundError(problem)
    cfg = _special_tokens(folder)
    pad = _token(cfg.get("pad_token"), "<|endoftext|>")
    max_length = int(cfg.get("model_max_length", 77))
    max_length = 77 if max_length > 10**6 else max_length  # "unset" is stored as a huge int
    from_json = (folder / "tokenizer.json").is_file()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json")) if from_json else _bpe(folder, cfg)
    pad_id = tok.token_to_id(pad)
    if pad_id is None:
        raise ValueError(f"{folder}: the pad token {pad!r} is not in the tokenizer's vocab")
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad)
    return tok


def _bpe(folder: pathlib.Path, cfg: dict) -> Tokenizer:
    """transformers' CLIPTokenizer rebuilt from vocab.json + merges.txt (no padding yet)."""
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#")]
    bos = _token(cfg.get("bos_token"), "<|startoftext|>")
    eos = _token(cfg.get("eos_token"), "<|endoftext|>")
    unk = _token(cfg.get("unk_token"), "<|endoftext|>")
    pad = _token(cfg.get("pad_token"), "<|endoftext|>")
    missing = [t for t in (bos, eos, unk, pad) if t not in vocab]
    if missing:
        raise ValueError(f"{folder / 'vocab.json'}: special tokens {missing} are not in the vocab")

    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token=unk,
        )
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken(t, special=True) for t in dict.fromkeys((bos, eos, unk, pad))]
    )
    tok.post_processor = processors.RobertaProcessing(
        (eos, vocab[eos]), (bos, vocab[bos]), trim_offsets=False, add_prefix_space=False
    )
    return tok


def tokenize(tokenizer: Tokenizer, prompts: Sequence[str]) -> np.ndarray:
    """Prompts -> token ids [B, 77] int32 (bos, tokens, eos, padding)."""
    return np.asarray([e.ids for e in tokenizer.encode_batch(list(prompts))], np.int32)
