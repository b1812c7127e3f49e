"""Qwen's real vocabulary, built offline: the published byte-level BPE ranks (``qwen.tiktoken``, shipped inside
the ``dashscope`` package on PyPI) converted to a fast tokenizer, with Qwen3-VL's special tokens at their ids.

The checkpoints the tests build use a small BPE; this one splits prompts exactly as Qwen3-VL-Reranker's
tokenizer does, so prompt lengths, truncation and the per-pair suffix cost are the real ones. It is a
development tool (``pip install ".[dev]"``), never needed to serve a real checkpoint, which ships its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import os
from pathlib import Path

from .errors import ConfigError

__all__ = ["QWEN3_VL_SPECIAL_TOKENS", "QWEN3_VL_VOCAB_SIZE", "QWEN_PATTERN", "qwen_ranks_path", "qwen_tokenizer"]

#: Qwen3-VL's special tokens and their ids, as the public checkpoints' tokenizer_config.json lists them: they
#: follow the 151643 ordinary tokens in this order.
QWEN3_VL_SPECIAL_TOKENS: dict[str, int] = {
    token: 151643 + offset
    for offset, token in enumerate(
        [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|object_ref_start|>",
            "<|object_ref_end|>",
            "<|box_start|>",
            "<|box_end|>",
            "<|quad_start|>",
            "<|quad_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
            "<tool_call>",
            "</tool_call>",
            "<|fim_prefix|>",
            "<|fim_middle|>",
            "<|fim_suffix|>",
            "<|fim_pad|>",
            "<|repo_name|>",
            "<|file_sep|>",
            "<tool_response>",
            "</tool_response>",
            "<think>",
            "</think>",
        ]
    )
}
#: Rows of the Qwen3-VL embedding table (the vocabulary padded to a multiple of 128).
QWEN3_VL_VOCAB_SIZE = 151936
_ORDINARY_TOKENS = 151643
#: Qwen's pre-tokenizer split: digits one at a time (not GPT-4's runs of up to three).
QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
#: The checkpoints' ``additional_special_tokens``: ids 151644..151656. Those after them (tool calls, fill-in-the-
#: middle, thinking) are added tokens that are not special, so truncation may drop them as the official code does.
_ADDITIONAL_SPECIALS = [t for t, i in QWEN3_VL_SPECIAL_TOKENS.items() if 151644 <= i <= 151656]


def qwen_ranks_path() -> Path:
    """Where the published ranks are: ``$MINIRERANK_QWEN_RANKS`` or ``dashscope``'s bundled ``qwen.tiktoken``
    (found without importing ``dashscope``).

    Raises:
        ConfigError: neither is there, with the command that installs them.
    """
    override = os.environ.get("MINIRERANK_QWEN_RANKS")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("dashscope")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "resources" / "qwen.tiktoken"
        if path.is_file():
            return path
    raise ConfigError(
        "Qwen's BPE ranks were not found: install the dev extra (pip install 'dashscope>=1.14', which bundles "
        "qwen.tiktoken) or set MINIRERANK_QWEN_RANKS to a qwen.tiktoken file"
    )


def _read_ranks(path: Path) -> dict[bytes, int]:
    """``token_base64 rank`` per line, ranks 0..n-1 each once."""
    ranks: dict[bytes, int] = {}
    try:
        for line in path.read_bytes().splitlines():
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
    except (OSError, ValueError, binascii.Error) as exc:
        raise ConfigError(f"{path}: not a tiktoken rank file ({exc})") from exc
    if sorted(ranks.values()) != list(range(_ORDINARY_TOKENS)):
        raise ConfigError(f"{path}: expected ranks 0..{_ORDINARY_TOKENS - 1} once each, got {len(ranks)} tokens")
    return ranks


def qwen_tokenizer(
    ranks_path: str | os.PathLike[str] | None = None, *, cache_dir: str | os.PathLike[str] | None = None
):
    """A ``Qwen2TokenizerFast`` with Qwen's vocabulary and Qwen3-VL's special tokens at their published ids.

    Converting the 151643 ranks takes seconds; with ``cache_dir`` the result is kept there (as
    ``tokenizer.json``, keyed by the ranks file's digest) and read back next time.
    """
    from tokenizers import AddedToken, Tokenizer, normalizers
    from transformers import Qwen2TokenizerFast  # type: ignore[attr-defined]  # exported lazily, unseen by mypy
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = Path(ranks_path) if ranks_path is not None else qwen_ranks_path()
    cached = None
    if cache_dir is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        cached = Path(cache_dir) / f"qwen-tokenizer-{digest}.json"
    if cached is not None and cached.is_file():
        backend = Tokenizer.from_file(str(cached))
    else:
        ranks = _read_ranks(path)

        class _Converter(TikTokenConverter):
            @staticmethod
            def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
                return ranks

        backend = _Converter(vocab_file=str(path), pattern=QWEN_PATTERN).converted()
        backend.normalizer = normalizers.NFC()  # as Qwen2's tokenizer normalizes
        backend.add_tokens(
            [AddedToken(t, normalized=False, special=i <= 151656) for t, i in QWEN3_VL_SPECIAL_TOKENS.items()]
        )
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            backend.save(str(cached))
    wrong = {t: backend.token_to_id(t) for t, i in QWEN3_VL_SPECIAL_TOKENS.items() if backend.token_to_id(t) != i}
    if wrong:
        raise ConfigError(f"special tokens landed at other ids than Qwen3-VL's: {wrong}")
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    tokenizer.add_special_tokens({"additional_special_tokens": _ADDITIONAL_SPECIALS})
    return tokenizer
