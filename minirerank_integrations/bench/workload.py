"""The benchmark's inputs: screenshot-like pages, text queries of realistic length, text candidates, and the
tokenizer: Qwen's own vocabulary when its published ranks are installed (the dev extra), else a stand-in in
which every word of the workload (and of the prompt templates) is one token, as with Qwen's tokenizer for
everyday English."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from ..errors import ConfigError
from ..qwen_vocab import qwen_tokenizer
from ..tiny_checkpoint import build_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_WORDS = (
    "quarterly revenue chart for the northern region in fiscal year growth table showing monthly sales "
    "figures by product line with a bar graph of operating costs and a summary of customer support tickets "
    "dashboard screen listing open issues network latency server status report slide about market share "
    "forecast invoice total amount due payment terms shipping address order number delivery date contract "
    "clause liability insurance policy coverage limits employee handbook vacation days onboarding checklist"
).split()

QUERIES = [
    "quarterly revenue chart for the northern region in fiscal year",
    "table showing monthly sales figures by product line",
    "bar graph of operating costs with a summary of customer support tickets",
    "dashboard screen listing open issues and network latency",
    "invoice total amount due with payment terms and shipping address",
    "contract clause about liability insurance policy coverage limits",
]


#: Where the converted Qwen vocabulary is kept between runs (converting the ranks takes seconds).
_VOCAB_CACHE = Path.home() / ".cache" / "minirerank"


def bench_tokenizer(vocabulary: str = "auto") -> tuple[PreTrainedTokenizerBase, str]:
    """The benchmark's tokenizer and the name of its vocabulary: ``"qwen"`` (Qwen's real vocabulary, so prompt
    and suffix lengths are the real ones), ``"workload"`` (:func:`workload_tokenizer`), or ``"auto"``: Qwen's
    when its ranks are installed, else the stand-in."""
    if vocabulary not in ("auto", "qwen", "workload"):
        raise ConfigError(f"vocabulary must be 'auto', 'qwen' or 'workload', got {vocabulary!r}")
    if vocabulary != "workload":
        try:
            return qwen_tokenizer(cache_dir=_VOCAB_CACHE), "qwen"
        except ConfigError:
            if vocabulary == "qwen":
                raise
    return workload_tokenizer(), "workload"


def workload_tokenizer():
    """A byte-level BPE (Qwen's special tokens) trained until the workload's words are single tokens."""
    passages = [" ".join(_WORDS)] * 8 + QUERIES * 8 + [text_candidate(i) for i in range(8)]
    tokenizer = build_tokenizer(vocab_size=4000, extra_corpus=passages)
    for query in QUERIES:  # every word one token: the query's length is its word count
        words = query.split()
        got = len(tokenizer(" " + query, add_special_tokens=False)["input_ids"])
        if got != len(words):
            raise RuntimeError(f"benchmark tokenizer splits {query!r} into {got} tokens, not {len(words)}")
    return tokenizer


def page(index: int, size: int) -> Image.Image:
    """A size x size screenshot-like page: a title bar, lines of 'text', a chart and a table; distinct per index."""
    rng = random.Random(index)
    image = Image.new("RGB", (size, size), (250, 250, 248))
    draw = ImageDraw.Draw(image)
    unit = size / 64
    draw.rectangle([0, 0, size, 5 * unit], fill=(30 + rng.randrange(60), 60 + rng.randrange(60), 120))
    y = 8 * unit
    while y < 30 * unit:
        draw.rectangle([4 * unit, y, (10 + rng.randrange(48)) * unit, y + unit], fill=(60, 60, 60))
        y += 2 * unit
    for bar in range(8):  # a bar chart
        height = (4 + rng.randrange(14)) * unit
        x = (6 + 4 * bar) * unit
        draw.rectangle([x, 52 * unit - height, x + 3 * unit, 52 * unit], fill=(rng.randrange(256), 120, 200))
    for row in range(4):  # a table
        for col in range(3):
            x, y = (40 + 7 * col) * unit, (34 + 4 * row) * unit
            draw.rectangle([x, y, x + 6 * unit, y + 3 * unit], outline=(90, 90, 90))
    return image


def text_candidate(index: int, words: int = 40) -> str:
    """A passage of ``words`` workload words (about 40 tokens), distinct per index."""
    rng = random.Random(1000 + index)
    return " ".join(rng.choice(_WORDS) for _ in range(words))
