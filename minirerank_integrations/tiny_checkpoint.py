"""Tiny Qwen3-VL checkpoints built offline: random weights, a small byte-level BPE tokenizer, the
Qwen2-VL image processor. They are saved and loaded through the same ``from_pretrained`` path that
real checkpoints use, so tests, the demo and training exercise the real code without a download.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# transformers 5: Qwen2Tokenizer is the tokenizers-backed class (Qwen2TokenizerFast an untyped alias of it).
from transformers import Qwen2Tokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from .engine.prompts import DEFAULT_INSTRUCTION, EMBEDDER_SYSTEM, RERANKER_SYSTEM

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Sentences the BPE is trained on: the prompt templates plus a little everyday vocabulary, so
# prompts tokenize into a realistic number of tokens (any text still encodes, byte by byte).
_CORPUS = [
    RERANKER_SYSTEM,
    EMBEDDER_SYSTEM,
    DEFAULT_INSTRUCTION,
    "<Instruct>: <Query>: <Document>: NULL system user assistant",
    "a red circle, a blue square, a green triangle, a yellow star on the left, on the right, at the top",
    "one two three four five six seven eight nine ten objects shapes colours page title report screen",
    "What is the capital of France? Paris is the capital of France. The quick brown fox jumps.",
    "yes no Yes No",
]


def build_tokenizer(vocab_size: int = 600, extra_corpus: Sequence[str] = ()) -> Qwen2Tokenizer:
    """A byte-level BPE with Qwen's special tokens, where ``yes`` and ``no`` are single tokens.

    ``extra_corpus`` adds sentences (e.g. a data set's queries) so their words become few tokens.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4 + list(extra_corpus), trainer=trainer)
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,  # type: ignore[arg-type]  # byte-level: no unknown token; transformers types it str
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    for word in ("yes", "no"):
        if len(tokenizer.tokenize(word)) != 1:
            tokenizer.add_tokens([word])
    return tokenizer


def tiny_config(
    tokenizer: Qwen2Tokenizer,
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    vision_depth: int = 3,
    vision_hidden_size: int = 32,
    head_dim: int = 16,
    vocab_size: int | None = None,
) -> Qwen3VLConfig:
    """A Qwen3-VL config small enough for CPU tests, with DeepStack on every vision layer up to 3.

    ``vocab_size``: rows of the embedding table (at least the tokenizer's length; the real checkpoints pad it).
    """

    def ids(token: str) -> int:
        found = tokenizer.convert_tokens_to_ids(token)  # one token in, one id out
        assert isinstance(found, int), found
        return found

    return Qwen3VLConfig(
        text_config={
            "vocab_size": max(vocab_size or 0, len(tokenizer)),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": hidden_size // head_dim,
            "num_key_value_heads": max(1, hidden_size // head_dim // 2),
            "head_dim": head_dim,
            "max_position_embeddings": 32768,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": [2, 3, 3],  # sums to head_dim / 2
                "mrope_interleaved": True,
            },
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "num_heads": 2,
            "intermediate_size": 2 * vision_hidden_size,
            "out_hidden_size": hidden_size,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,  # a perfect square, as the position interpolation needs
            "deepstack_visual_indexes": list(range(min(3, vision_depth))),
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def build_image_processor() -> Qwen2VLImageProcessorPil:
    """The processor settings Qwen3-VL checkpoints ship (patch 16, mean/std 0.5)."""
    return Qwen2VLImageProcessorPil(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 4 * 32 * 32, "longest_edge": 1800 * 32 * 32},
    )


def build_tiny_checkpoint(
    path: str | Path,
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    vision_depth: int = 3,
    seed: int = 0,
    weight_scale: float = 4.0,
    tokenizer: Qwen2Tokenizer | None = None,
    vocab_size: int | None = None,
) -> Path:
    """Write a randomly initialised tiny Qwen3-VL checkpoint (model, tokenizer, image processor) to ``path``.

    ``weight_scale`` multiplies the default initialisation: at the default scale every pair gets
    nearly the same score, while larger weights make the yes/no head discriminate (tests of
    ordering need that). ``tokenizer``: another vocabulary than the small trained BPE, e.g. Qwen's own
    (:func:`minirerank_integrations.qwen_vocab.qwen_tokenizer`, with ``vocab_size`` 151936 as the real checkpoints).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    config = tiny_config(
        tokenizer, num_layers=num_layers, hidden_size=hidden_size, vision_depth=vision_depth, vocab_size=vocab_size
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and "norm" not in name:
                param.mul_(weight_scale)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    build_image_processor().save_pretrained(path)
    return path
