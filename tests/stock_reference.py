"""The stock transformers forward on a prompt written out by hand from ``docs/design.md`` ("Reference semantics"): the yardstick
the engine is held to (invariants 1 and 2)."""

from __future__ import annotations

import torch

SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."


def pads(image, merge: int = 2, patch: int = 16) -> str:
    width, height = image.size
    return "<|vision_start|>" + "<|image_pad|>" * ((height // patch) * (width // patch) // merge**2) + "<|vision_end|>"


def side(text, images) -> str:
    body = "".join(pads(im) for im in images) + (text or "")
    return body or "NULL"


def official_prompt(q_text, q_images, d_text, d_images, instruction: str = INSTRUCTION) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
        f"<Instruct>: {instruction}<Query>:{side(q_text, q_images)}\n<Document>:{side(d_text, d_images)}"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


@torch.no_grad()
def stock_score(backbone, input_ids: list[int], images: list) -> float:
    """sigmoid(logit yes - logit no) of the last token from ``Qwen3VLForConditionalGeneration``'s own forward."""
    model = backbone.model
    ids = torch.tensor([input_ids])
    kwargs = {}
    if images:
        out = backbone.image_processor(images=images, do_resize=False, return_tensors="pt")
        kwargs = {
            "pixel_values": out["pixel_values"],
            "image_grid_thw": out["image_grid_thw"],
            "mm_token_type_ids": (ids == model.config.image_token_id).int(),
        }
    logits = model(input_ids=ids, **kwargs).logits[0, -1].float()
    return float(torch.sigmoid(logits[backbone.yes_id] - logits[backbone.no_id]))
