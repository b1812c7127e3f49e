"""The reranker's prompts as token sequences: the official query-first prompt (the dense baseline),
the vision-first prefix/suffix split, the embedder prompt used by pruning, and the official truncation.

Text is rendered as the Qwen3-VL chat template renders it (``docs/design.md``, "Reference semantics"), with each image
placeholder already expanded to its ``<|image_pad|>`` tokens, and tokenized without added specials.
Only the template's own markers become special tokens: user text (query, document, instruction) is
ordinary text even where it spells ``<|image_pad|>`` or ``<|im_start|>``, so it can neither fake an
image nor escape truncation. For ordinary text the ids equal tokenizing the whole rendered string, since
the tokenizer splits at special tokens and encodes the pieces between them on their own.
"""

from __future__ import annotations

import re
import threading
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import xxhash
from PIL import Image

from ..errors import InputError

RERANKER_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
EMBEDDER_SYSTEM = "Represent the user's input."
DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
MAX_LENGTH = 10240  # official limit on ordinary + special tokens before the 5 closing tokens
CLOSING_TOKENS = 5  # "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n": never truncated

Side = Literal["query", "document"]


class PreparedImage:
    """One image after the official resize, with its token grid and its identity in cache keys.

    The pixels may be held (``image``) or produced on first use by ``loader`` (a seen image whose prefix is
    stored is never decoded: ``docs/design.md``, "What a prefix key covers"); either way they are the resized RGB
    image, sides multiples of patch * merge. Two prepared images are equal when grid and digest are.
    """

    __slots__ = ("_image", "_loader", "digest", "grid_thw", "merge_size")

    def __init__(
        self,
        image: Image.Image | None,
        grid_thw: tuple[int, int, int],
        digest: str,
        merge_size: int = 2,
        *,
        loader: Callable[[], Image.Image] | None = None,
    ) -> None:
        if image is None and loader is None:
            raise ValueError("PreparedImage needs its image or a loader")
        self._image, self._loader = image, loader
        self.grid_thw = grid_thw  # patch grid before the 2x2 merge
        self.digest = digest  # the image's identity in cache keys
        self.merge_size = merge_size

    @property
    def image(self) -> Image.Image:
        """The resized RGB pixels, decoded on first use when only a loader was given."""
        if self._image is None:
            self._image = self._loader()  # type: ignore[misc]
        return self._image

    @property
    def loaded(self) -> bool:
        """Whether the pixels are in memory (False: a seen image not decoded yet)."""
        return self._image is not None

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid_thw
        return t * h * w // (self.merge_size**2)

    def placeholder(self) -> str:
        """Its place in the prompt: ``<|vision_start|>``, one ``<|image_pad|>`` per merged token, ``<|vision_end|>``."""
        return "<|vision_start|>" + "<|image_pad|>" * self.num_tokens + "<|vision_end|>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PreparedImage):
            return NotImplemented
        return (self.grid_thw, self.digest, self.merge_size) == (other.grid_thw, other.digest, other.merge_size)

    def __hash__(self) -> int:
        return hash((self.grid_thw, self.digest, self.merge_size))

    def __repr__(self) -> str:
        return f"PreparedImage(grid_thw={self.grid_thw}, digest={self.digest!r}, loaded={self.loaded})"


class VideoLike(Protocol):
    """A prepared video as a prompt sees it: its temporal groups, each a visual unit (:mod:`.video`)."""

    @property
    def groups(self) -> Sequence[PreparedImage]: ...


@dataclass(frozen=True)
class SideContent:
    """What one side (query or document) contributes: its videos, then its images, then its text."""

    text: str | None
    images: Sequence[PreparedImage] = field(default_factory=tuple)
    videos: Sequence[VideoLike] = field(default_factory=tuple)

    @property
    def has_visual(self) -> bool:
        """Whether the side holds an image or a video."""
        return bool(self.images) or bool(self.videos)

    @property
    def visual_units(self) -> tuple[PreparedImage, ...]:
        """Its visual units in prompt order: each video's temporal groups, then the images."""
        return (*(group for video in self.videos for group in video.groups), *self.images)


@dataclass(frozen=True)
class Segment:
    """A tokenized stretch of prompt and the visual units (images, video groups) whose pad tokens it holds, in
    order."""

    input_ids: tuple[int, ...]
    images: tuple[PreparedImage, ...]


# The template's special markers; only these (never user text) are encoded as special tokens.
_TEMPLATE_SPECIALS = re.compile(r"(<\|(?:im_start|im_end|vision_start|vision_end|image_pad|video_pad)\|>)")


class UserText(str):
    """Text from a caller (query, document, instruction): encoded as ordinary text, specials spelled out."""


Part = str  # a template string (its special markers are special tokens) or a UserText


#: Tokens of encoded prompt parts remembered per tokenizer (4 bytes each: 32 MB): a prefix's side (a page with
#: hundreds of image pads) and a query's side are tokenized once, not once per pair and call.
ENCODED_TOKENS = 1 << 23
_encoded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_encoded_lock = threading.Lock()


class _EncodedParts:
    """An LRU of encoded parts (xxh3-128 of the parts -> ids) bounded in tokens."""

    def __init__(self) -> None:
        self.items: OrderedDict[bytes, array] = OrderedDict()
        self.tokens = 0

    def get(self, key: bytes) -> array | None:
        ids = self.items.get(key)
        if ids is not None:
            self.items.move_to_end(key)
        return ids

    def put(self, key: bytes, ids: array) -> None:
        if key in self.items or len(ids) > ENCODED_TOKENS:
            return
        self.items[key] = ids
        self.tokens += len(ids)
        while self.tokens > ENCODED_TOKENS:
            _, dropped = self.items.popitem(last=False)
            self.tokens -= len(dropped)


def _parts_key(tokenizer, parts: Sequence[Part]) -> bytes:
    # The vocabulary size too: tokens added to the tokenizer change the ids.
    hasher = xxhash.xxh3_128(f"{len(tokenizer)}".encode())
    for part in parts:
        data = str(part).encode("utf-8", "surrogatepass")
        hasher.update(b"u" if isinstance(part, UserText) else b"t")
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.digest()


def encode_parts(tokenizer, parts: Sequence[Part]) -> list[int]:
    """Token ids of ``parts`` joined: template markers as special tokens, everything else as ordinary text.

    Remembered per tokenizer (:data:`ENCODED_TOKENS`): the same parts are tokenized once."""
    key = _parts_key(tokenizer, parts)
    with _encoded_lock:
        try:
            memo = _encoded.setdefault(tokenizer, _EncodedParts())
        except TypeError:  # a tokenizer that cannot be weakly referenced: encode every time
            memo = None
        cached = memo.get(key) if memo is not None else None
    if cached is not None:
        return cached.tolist()
    ids = _encode_parts(tokenizer, parts)
    if memo is not None:
        with _encoded_lock:
            memo.put(key, array("q", ids))
    return ids


def _encode_parts(tokenizer, parts: Sequence[Part]) -> list[int]:
    ids: list[int] = []
    pending: list[str] = []
    marker_ids: dict[str, int] = {}  # an image is hundreds of the same marker: look each up once

    def flush() -> None:
        if pending:
            text = "".join(pending)
            ids.extend(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            pending.clear()

    for part in parts:
        if isinstance(part, UserText):
            pending.append(str(part))
            continue
        for index, piece in enumerate(_TEMPLATE_SPECIALS.split(part)):
            if index % 2:
                flush()
                if piece not in marker_ids:
                    marker_ids[piece] = tokenizer.convert_tokens_to_ids(piece)
                ids.append(marker_ids[piece])
            elif piece:
                pending.append(piece)
    flush()
    return ids


def render_side(content: SideContent) -> tuple[list[Part], tuple[PreparedImage, ...]]:
    """Videos first (each temporal group after its timestamp), then images, then text; a side with no content
    says ``NULL`` (as the official code does)."""
    text = content.text or ""
    units = content.visual_units
    if not units and not text:
        return ["NULL"], ()
    return [*(unit.placeholder() for unit in units), UserText(text)], units


def _system_and_user_start(system: str) -> str:
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"


_ASSISTANT_START = "<|im_end|>\n<|im_start|>assistant\n"


def truncate_ids(ids: Sequence[int], max_length: int, special_ids: set[int], keep_tail: int) -> tuple[int, ...]:
    """The official rule: keep the last ``keep_tail`` tokens and every special token, and only the first
    ordinary tokens that fit in ``max_length`` minus the specials.

    Raises :class:`InputError` when the special tokens alone (the images' pads) exceed ``max_length``:
    the prompt could not be bounded.
    """
    head, tail = list(ids[: len(ids) - keep_tail]), list(ids[len(ids) - keep_tail :])
    if len(head) <= max_length:
        return tuple(ids)
    specials = sum(1 for t in head if t in special_ids)
    if specials > max_length:
        raise InputError(
            f"the prompt holds {specials} special tokens (image pads), more than max_length {max_length}; "
            "use fewer or smaller images, or a larger max_length"
        )
    budget = max_length - specials
    kept: list[int] = []
    for t in head:
        if t in special_ids:
            kept.append(t)
        elif budget > 0:
            kept.append(t)
            budget -= 1
    return tuple(kept + tail)


def query_first_segment(
    tokenizer,
    query: SideContent,
    document: SideContent,
    instruction: str,
    *,
    max_length: int,
    special_ids: set[int],
) -> Segment:
    """The official Qwen3-VL-Reranker prompt as one segment (``docs/design.md``, "Reference semantics")."""
    q_text, q_images = render_side(query)
    d_text, d_images = render_side(document)
    parts = [
        _system_and_user_start(RERANKER_SYSTEM) + "<Instruct>: ",
        UserText(instruction),
        "<Query>:",
        *q_text,
        "\n<Document>:",
        *d_text,
        _ASSISTANT_START,
    ]
    ids = truncate_ids(encode_parts(tokenizer, parts), max_length, special_ids, CLOSING_TOKENS)
    return Segment(ids, q_images + d_images)


def vision_first_segments(
    tokenizer,
    query: SideContent,
    document: SideContent,
    instruction: str,
    prefix_side: Side,
    *,
    max_length: int,
    special_ids: set[int],
    instruction_in_prefix: bool = False,
) -> tuple[Segment, Segment]:
    """The vision-first prompt, split into the prefix (system + the visual side) and the suffix
    (instruction + the other side + generation prompt).

    ``instruction_in_prefix``: the instruction ends the system turn's start instead (system, instruction, the
    visual side | the other side, generation prompt): shared by every pair, it is cached with the prefix and
    the per-pair suffix shrinks to the other side and the closing tokens.

    Each segment is tokenized and truncated on its own: the prefix must not depend on the suffix, or
    it could not be cached across queries.
    """
    first, second = (document, query) if prefix_side == "document" else (query, document)
    first_label, second_label = (
        ("<Document>:", "<Query>:")
        if prefix_side == "document"
        else (
            "<Query>:",
            "\n<Document>:",
        )
    )
    f_text, f_images = render_side(first)
    s_text, s_images = render_side(second)
    if instruction_in_prefix:
        prefix_parts = [
            _system_and_user_start(RERANKER_SYSTEM) + "<Instruct>: ",
            UserText(instruction),
            "\n" + first_label,
        ]
        prefix_parts += f_text
        suffix_parts = ["\n" + second_label.lstrip("\n"), *s_text, _ASSISTANT_START]
    else:
        prefix_parts = [_system_and_user_start(RERANKER_SYSTEM) + first_label, *f_text]
        suffix_parts = ["\n<Instruct>: ", UserText(instruction), second_label, *s_text, _ASSISTANT_START]
    prefix = truncate_ids(encode_parts(tokenizer, prefix_parts), max_length, special_ids, 0)
    suffix = truncate_ids(encode_parts(tokenizer, suffix_parts), max_length, special_ids, CLOSING_TOKENS)
    return Segment(prefix, f_images), Segment(suffix, s_images)


def embedder_segment(tokenizer, image: PreparedImage) -> Segment:
    """The Qwen3-VL-Embedding prompt for one visual unit (an image, or a video's temporal group after its
    timestamp); its last token is the pooled one."""
    text = _system_and_user_start(EMBEDDER_SYSTEM) + image.placeholder() + _ASSISTANT_START
    return Segment(tuple(encode_parts(tokenizer, [text])), (image,))
