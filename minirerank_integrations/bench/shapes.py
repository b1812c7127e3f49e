"""Model shapes the benchmarks build with random weights or compute bytes for: the published Qwen3-VL
configurations, a quick ``small`` one and the ``tiny`` test checkpoint's.

Values are those of the released ``config.json`` files (Qwen3-VL-2B / 8B; the rerankers share them). The
vocabulary is the benchmark tokenizer's: speed does not depend on it (the score reads two rows of the head).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the shapes table itself imports no torch: `minirerank --help` lists its names
    import torch
    from transformers import Qwen3VLConfig

    from ..engine.modeling import Backbone


@dataclass(frozen=True)
class ModelShape:
    """The sizes that set a Qwen3-VL model's cost."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    vision_depth: int
    vision_hidden: int
    vision_heads: int
    vision_mlp: int
    deepstack: tuple[int, ...]
    vision_positions: int = 2304  # a perfect square (learned position grid 48 x 48)
    mrope_section: tuple[int, int, int] = (24, 20, 20)

    def kv_bytes_per_token(self, layers: int, element_size: int) -> int:
        """Bytes of keys and values one token holds over ``layers`` layers."""
        return 2 * layers * self.kv_heads * self.head_dim * element_size

    def describe(self) -> dict:
        return asdict(self)


SHAPES: dict[str, ModelShape] = {
    "qwen3-vl-2b": ModelShape(28, 2048, 16, 8, 128, 6144, 24, 1024, 16, 4096, (5, 11, 17)),
    "qwen3-vl-8b": ModelShape(36, 4096, 32, 8, 128, 12288, 27, 1152, 16, 4304, (8, 16, 24)),
    # A quick shape with the 2B's proportions (GQA groups of 2, DeepStack at three early layers).
    "small": ModelShape(8, 256, 4, 2, 64, 768, 4, 128, 2, 256, (0, 1, 2), 64, (8, 12, 12)),
    # The 8-layer test checkpoint of ``tiny_checkpoint.build_tiny_checkpoint(num_layers=8)``.
    "tiny": ModelShape(8, 64, 4, 2, 16, 128, 3, 32, 2, 64, (0, 1, 2), 64, (2, 3, 3)),
}


def shape_config(shape: ModelShape, tokenizer) -> Qwen3VLConfig:
    """A ``Qwen3VLConfig`` of ``shape`` whose special token ids are the tokenizer's."""
    from transformers import Qwen3VLConfig

    ids = tokenizer.convert_tokens_to_ids
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": shape.hidden,
            "intermediate_size": shape.mlp,
            "num_hidden_layers": shape.layers,
            "num_attention_heads": shape.heads,
            "num_key_value_heads": shape.kv_heads,
            "head_dim": shape.head_dim,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": list(shape.mrope_section),
                "mrope_interleaved": True,
            },
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": shape.vision_depth,
            "hidden_size": shape.vision_hidden,
            "num_heads": shape.vision_heads,
            "intermediate_size": shape.vision_mlp,
            "out_hidden_size": shape.hidden,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": shape.vision_positions,
            "deepstack_visual_indexes": list(shape.deepstack),
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def random_backbone(
    name: str, tokenizer, image_processor, *, device: str = "cpu", dtype: torch.dtype | None = None, seed: int = 0
) -> Backbone:
    """A random-weight model of shape ``name``, built in memory (nothing written to disk)."""
    shape = SHAPES[name]
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from ..engine.modeling import Backbone

    dtype = torch.float32 if dtype is None else dtype
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration(shape_config(shape, tokenizer))
    model.to(dtype)  # type: ignore[arg-type]  # transformers types its wrapped `to` as taking the model itself
    return Backbone(model, tokenizer, image_processor, f"random {name}")
