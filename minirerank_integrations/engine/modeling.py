"""The Qwen3-VL model family: loading a checkpoint, the yes/no score head, image encoding with
DeepStack features, and M-RoPE positions computed per segment.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, Qwen3VLForConditionalGeneration

from ..errors import ConfigError, ModelLoadError
from .fingerprint import ModelIdentity, processor_identity
from .prompts import PreparedImage, Segment
from .video import PreparedVideo, VideoGroup
from .video_settings import VideoProcessing

logger = logging.getLogger(__name__)

#: A checkpoint's video processor settings; read as JSON (the transformers class needs torchvision).
VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"

#: A checkpoint folder may hold the RerankConfig it was adapted to; ``from_pretrained(config=None)`` uses it.
CONFIG_FILE = "minirerank_config.json"
#: Written by ``minirerank adapt``: how the folder was made, including the checkpoint that guides its pruning.
ADAPT_FILE = "adapt.json"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class SegmentStates:
    """A segment's decoder inputs: embeddings, M-RoPE positions and DeepStack features."""

    hidden: torch.Tensor  # [tokens, hidden]
    positions: torch.Tensor  # [3, tokens] M-RoPE (t, h, w)
    visual: torch.Tensor  # [tokens] bool, True at image-pad and video-pad tokens
    deepstack: list[torch.Tensor]  # per DeepStack layer: [visual tokens, hidden]
    next_position: int  # where a following segment's first token sits

    @property
    def length(self) -> int:
        return self.hidden.shape[0]

    def select(self, keep: torch.Tensor) -> SegmentStates:
        """Keep the tokens where ``keep`` is True; survivors keep their positions and DeepStack features."""
        visual_keep = keep[self.visual]  # [visual tokens]
        return SegmentStates(
            hidden=self.hidden[keep],
            positions=self.positions[:, keep],
            visual=self.visual[keep],
            deepstack=[feat[visual_keep] for feat in self.deepstack],
            next_position=self.next_position,
        )

    def shifted(self, offset: int) -> SegmentStates:
        return SegmentStates(
            self.hidden, self.positions + offset, self.visual, self.deepstack, self.next_position + offset
        )


class Backbone:
    """A loaded ``Qwen3VLForConditionalGeneration`` with the pieces the layer loop needs."""

    def __init__(
        self,
        model: Qwen3VLForConditionalGeneration,
        tokenizer,
        image_processor,
        name: str,
        video_processing: VideoProcessing | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name
        inner = model.model
        self.visual = inner.visual
        self.language_model = inner.language_model
        self.layers = inner.language_model.layers
        self.rotary = inner.language_model.rotary_emb
        self.norm = inner.language_model.norm
        self.embed_tokens = inner.language_model.embed_tokens
        config: Any = model.config  # transformers types text_config and vision_config loosely
        self.num_layers = config.text_config.num_hidden_layers
        self.image_token_id = config.image_token_id
        self.video_token_id = config.video_token_id
        self.merge_size = config.vision_config.spatial_merge_size
        self.patch_size = config.vision_config.patch_size
        self.video_processing = video_processing or video_processing_of(image_processor)
        self.special_ids = set(tokenizer.all_special_ids) | {
            config.image_token_id,
            config.video_token_id,
            config.vision_start_token_id,
            config.vision_end_token_id,
        }
        vocab = tokenizer.get_vocab()
        missing = [w for w in ("yes", "no") if w not in vocab]
        if missing:
            raise ModelLoadError(f"tokenizer of {name!r} has no single token for {missing}: not a reranker vocabulary")
        self.yes_id, self.no_id = vocab["yes"], vocab["no"]
        self._identity = ModelIdentity(model, lambda: self.image_processor)

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def score_vector(self) -> torch.Tensor:
        """W_yes - W_no of the LM head, in float32 (bf16 logits tie; ``docs/design.md``, "Reference semantics")."""
        weight = self.model.get_output_embeddings().weight  # [vocab, hidden]
        return (weight[self.yes_id].float() - weight[self.no_id].float()).detach()  # [hidden]

    def fingerprint(self) -> str:
        """A digest of what was loaded, whatever path it was loaded from: every weight and buffer (with its
        dtype), the model config and the image processor's settings. Kept current on its own: a weight
        changed in place (``load_state_dict``, an in-place op, an optimizer step) or replaced, a module added,
        a setting changed, and the next call digests again what changed (:mod:`.fingerprint`). Tensors are
        digested on their own device; nothing is copied to the host."""
        return self._identity.digest()

    def invalidate_fingerprint(self) -> None:
        """Forget the cached digests. Only needed after writes through ``tensor.data``, which bypass the
        version counters :meth:`fingerprint` watches; harmless otherwise."""
        self._identity.refresh()

    def preprocessing_identity(self) -> str:
        """The image processor's settings that shape ``pixel_values`` (mean, std, patch, merge and temporal
        sizes, rescale factor, resample, ``do_*`` flags), as canonical JSON; part of :meth:`fingerprint`."""
        return processor_identity(self.image_processor)

    # -- images ---------------------------------------------------------------------------------

    def prepared_image(self, image, digest: str) -> PreparedImage:
        """Wrap an already resized RGB image; its token grid follows from its size."""
        width, height = image.size
        grid = (1, height // self.patch_size, width // self.patch_size)
        return PreparedImage(image, grid, digest, self.merge_size)

    def encode_image(self, image: PreparedImage) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Vision features of one image: merged tokens [n, hidden] and DeepStack features [n, hidden] each.
        A video's temporal group is encoded with its whole video (:meth:`encode_video`)."""
        if isinstance(image, VideoGroup):
            return self.encode_video(image.video)[image.index]
        out = self.image_processor(images=[image.image], do_resize=False, return_tensors="pt")
        if tuple(out["image_grid_thw"][0].tolist()) != image.grid_thw:
            raise ValueError(f"image processor grid {out['image_grid_thw'][0].tolist()} != {image.grid_thw}")
        pixels = out["pixel_values"].to(self.device, self.visual.dtype)
        grid = torch.tensor([image.grid_thw], device=self.device)
        out = self.visual(pixels, grid_thw=grid, return_dict=True)
        return out.pooler_output.to(self.dtype), [f.to(self.dtype) for f in out.deepstack_features]

    def encode_video(self, video: PreparedVideo) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Vision features of each temporal group of ``video``, from one vision-encoder call on the whole video
        (as ``Qwen3VLModel.get_video_features``: attention stays within each group)."""
        pixels = video.pixel_values(self.video_processing).to(self.device, self.visual.dtype)
        grid = torch.tensor([video.grid_thw], device=self.device)
        out = self.visual(pixels, grid_thw=grid, return_dict=True)
        sizes = [group.num_tokens for group in video.groups]
        merged = out.pooler_output.to(self.dtype).split(sizes)
        stacks = [f.to(self.dtype).split(sizes) for f in out.deepstack_features]
        return [(merged[i], [stack[i] for stack in stacks]) for i in range(len(sizes))]

    # -- segments ---------------------------------------------------------------------------------

    def encode_images(self, images: list[PreparedImage]) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """:meth:`encode_image` of several images in one vision-encoder call (attention stays per image); video
        groups are encoded by video, each video once."""
        if not images:
            return []
        if any(isinstance(im, VideoGroup) for im in images):
            return self._encode_mixed(images)
        out = self.image_processor(images=[im.image for im in images], do_resize=False, return_tensors="pt")
        grid = out["image_grid_thw"].to(self.device)
        if [tuple(g) for g in grid.tolist()] != [im.grid_thw for im in images]:
            raise ValueError("image processor grids differ from the prepared images' grids")
        result = self.visual(out["pixel_values"].to(self.device, self.visual.dtype), grid_thw=grid, return_dict=True)
        sizes = [im.num_tokens for im in images]
        merged = result.pooler_output.to(self.dtype).split(sizes)
        stacks = [f.to(self.dtype).split(sizes) for f in result.deepstack_features]
        return [(merged[i], [stack[i] for stack in stacks]) for i in range(len(images))]

    def _encode_mixed(self, units: list[PreparedImage]) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        plain = [im for im in units if not isinstance(im, VideoGroup)]
        found = dict(zip((im.digest for im in plain), self.encode_images(plain)))
        for unit in units:
            if isinstance(unit, VideoGroup) and unit.digest not in found:
                for group, feats in zip(unit.video.groups, self.encode_video(unit.video)):
                    found[group.digest] = feats
        return [found[unit.digest] for unit in units]

    def positions(self, segment: Segment, start: int = 0) -> tuple[torch.Tensor, int]:
        """M-RoPE positions [3, tokens] of a segment starting at ``start``, and the next free position.

        Text tokens advance all three axes together; an image at p gets t = p, h = p + row,
        w = p + column on the merged grid, and text after it resumes at p + max(rows, columns)
        (as ``Qwen3VLModel.get_rope_index`` does for a whole sequence). A video's temporal group is placed as an
        image of one frame: its timestamp text between groups separates them.
        """
        ids = segment.input_ids
        pads = (self.image_token_id, self.video_token_id)
        out: list[torch.Tensor] = []
        pos, i, image_iter = start, 0, iter(segment.images)
        while i < len(ids):
            if ids[i] in pads:
                image = next(image_iter)
                t, h, w = image.grid_thw
                rows, cols = h // self.merge_size, w // self.merge_size
                grid_t, grid_h, grid_w = torch.meshgrid(
                    torch.arange(t), torch.arange(rows), torch.arange(cols), indexing="ij"
                )
                block = torch.stack([grid_t + pos, grid_h + pos, grid_w + pos]).reshape(3, -1)  # [3, t*rows*cols]
                out.append(block)
                i += block.shape[1]
                pos += max(rows, cols)
            else:
                j = i
                while j < len(ids) and ids[j] not in pads:
                    j += 1
                out.append(torch.arange(pos, pos + j - i).expand(3, -1))
                pos += j - i
                i = j
        positions = torch.cat(out, dim=1) if out else torch.zeros(3, 0, dtype=torch.long)
        return positions.to(self.device), pos

    def embed(
        self, segment: Segment, image_features: dict[str, tuple[torch.Tensor, list[torch.Tensor]]]
    ) -> SegmentStates:
        """Token embeddings with image features scattered in; ``image_features`` maps digest -> encode_image()."""
        ids = torch.tensor(segment.input_ids, device=self.device)
        hidden = self.embed_tokens(ids)  # [tokens, hidden]
        visual = (ids == self.image_token_id) | (ids == self.video_token_id)  # [tokens]
        deepstack: list[torch.Tensor] = []
        if segment.images:
            feats = [image_features[im.digest] for im in segment.images]
            hidden = hidden.clone()
            hidden[visual] = torch.cat([f[0] for f in feats])
            deepstack = [torch.cat([f[1][k] for f in feats]) for k in range(len(feats[0][1]))]
        positions, next_position = self.positions(segment)
        return SegmentStates(hidden, positions, visual, deepstack, next_position)


def _checked_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that exists here; :class:`ConfigError` otherwise."""
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"unknown device {device!r}: {exc}") from exc
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r}: CUDA is not available on this machine; use device='cpu'")
    if torch_device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r}: MPS is not available on this machine; use device='cpu'")
    return torch_device


def _is_local_path(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` can only be a folder (a hub id is ``name`` or ``org/name``)."""
    if isinstance(name_or_path, Path):
        return True
    name = str(name_or_path)
    return (
        name.startswith((".", "~", "/", "\\"))
        or Path(name).is_absolute()
        or name.count("/") > 1
        or "\\" in name
        or name != name.strip()
    )


def load_backbone(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    **model_kwargs: object,
) -> Backbone:
    """Load a ``Qwen3VLForConditionalGeneration`` checkpoint, its tokenizer and image processor.

    The tokenizer and image processor are loaded directly rather than through ``AutoProcessor``,
    whose Qwen3-VL video processor needs torchvision.
    """
    torch_dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if not isinstance(torch_dtype, torch.dtype):
        raise ModelLoadError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    name = str(name_or_path)
    torch_device = _checked_device(device)
    if _is_local_path(name_or_path) and not Path(name).expanduser().exists():
        raise ModelLoadError(f"no model folder at {name!r} (a local path that does not exist)")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read a model config from {name!r}: {exc}") from exc
    if config.model_type != "qwen3_vl":
        raise ModelLoadError(
            f"{name!r} is a {config.model_type!r} model; a Qwen3VLForConditionalGeneration checkpoint is needed"
        )
    extra: dict[str, Any] = dict(model_kwargs)  # passed through to transformers as given
    try:
        model = Qwen3VLForConditionalGeneration.from_pretrained(name, dtype=torch_dtype, **extra)
        tokenizer = AutoTokenizer.from_pretrained(name)
        image_processor = AutoImageProcessor.from_pretrained(name)
    except Exception as exc:  # OSError, ValueError, safetensors' SafetensorError on a damaged weights file, ...
        raise ModelLoadError(f"cannot load {name!r}: {type(exc).__name__}: {exc}") from exc
    video_processing = video_processing_of(image_processor, _video_processor_settings(name))
    try:
        moved: Any = model  # transformers' stubs type .to(device) on a model wrongly
        moved.to(torch_device)
    except (RuntimeError, AssertionError) as exc:  # e.g. torch built without that backend
        raise ModelLoadError(f"cannot move {name!r} to device {str(torch_device)!r}: {exc}") from exc
    return Backbone(model, tokenizer, image_processor, name, video_processing)


def video_processing_of(image_processor, settings: dict[str, Any] | None = None) -> VideoProcessing:
    """How this checkpoint turns frames into ``pixel_values``: its video processor's settings (``settings``, read
    from ``video_preprocessor_config.json``) where given, else its image processor's (Qwen3-VL ships the same)."""
    settings = settings or {}

    def pick(key: str, default: Any) -> Any:
        value = settings.get(key)
        return value if value is not None else getattr(image_processor, key, default)

    base = VideoProcessing()
    return VideoProcessing(
        patch_size=int(pick("patch_size", base.patch_size)),
        temporal_patch_size=int(pick("temporal_patch_size", base.temporal_patch_size)),
        merge_size=int(pick("merge_size", base.merge_size)),
        image_mean=tuple(float(v) for v in pick("image_mean", base.image_mean)),
        image_std=tuple(float(v) for v in pick("image_std", base.image_std)),
        rescale_factor=float(pick("rescale_factor", base.rescale_factor)),
    )


def _video_processor_settings(name: str) -> dict[str, Any] | None:
    """The checkpoint folder's ``video_preprocessor_config.json``, when it has one."""
    path = Path(name).expanduser() / VIDEO_PROCESSOR_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(settings, dict):
        raise ModelLoadError(f"{str(path)!r} does not hold a JSON object")
    return settings
