"""Run the official Qwen3-VL-Reranker on a checkpoint and print its scores and token ids as JSON.

Usage: ``python run_official.py CHECKPOINT CASES.json`` in a process whose path holds the oracle folder
(torchvision, decord, qwen-vl-utils: ``make oracle-deps``). CASES.json: ``{"max_frames": int, "cases":
[{"query": {...}, "document": {...}}], "nframes": [[total, video_fps, fps, min_frames, max_frames], ...]}``
where each side is the official ``{"text", "image", "video"}`` dict (a
frame list is a list of file paths). Prints ``{"scores": [...], "input_ids": [[...], ...], "nframes": [...]}``.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

#: Qwen3-VL's chat template as it renders a system message and a user message of text, images and videos
#: (each vision item as <|vision_start|><|image_pad|> or <|video_pad|><|vision_end|>, text as is).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def import_torchvision() -> None:
    """torchvision, standing an empty module in for its fake-kernel registrations when its C operators do
    not load into this torch (a CUDA wheel on a CPU torch; tests/official/README.md)."""
    try:
        importlib.import_module("torchvision")
        return
    except RuntimeError:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    importlib.import_module("torchvision")


def _with_tensor_token_types(tokenize, seen: list):
    """The official ``tokenize``, with ``mm_token_type_ids`` as a tensor. The official code was written for
    transformers 4.57, whose processor returned no token types; transformers 5 returns them as lists (no
    ``return_tensors``) and the official padding step converts only ``input_ids`` and ``attention_mask``. One
    pair at a time, nothing is padded, so the lists are the token types as they are."""
    import torch

    def wrapped(pairs, **kwargs):
        inputs = tokenize(pairs, **kwargs)
        seen.extend(ids.tolist() for ids in inputs["input_ids"])
        if "mm_token_type_ids" in inputs and not isinstance(inputs["mm_token_type_ids"], torch.Tensor):
            inputs["mm_token_type_ids"] = torch.tensor(inputs["mm_token_type_ids"])
        return inputs

    return wrapped


def _nframes(cases: list[list[float]]) -> list[int | None]:
    """qwen-vl-utils' ``smart_nframes`` of each (total frames, video fps, fps, min_frames, max_frames); None
    where it refuses."""
    from qwen_vl_utils.vision_process import smart_nframes

    out: list[int | None] = []
    for total, video_fps, fps, min_frames, max_frames in cases:
        try:
            ele = {"fps": fps, "min_frames": min_frames, "max_frames": max_frames}
            out.append(int(smart_nframes(ele, total_frames=int(total), video_fps=video_fps)))
        except ValueError:
            out.append(None)
    return out


def main() -> None:
    checkpoint, cases_file = Path(sys.argv[1]), Path(sys.argv[2])
    spec = json.loads(cases_file.read_text())
    import_torchvision()
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    sys.path.insert(0, str(Path(__file__).parent))
    import qwen3_vl_reranker as official

    # The tiny checkpoints ship an image processor and a tokenizer: the full processor is built here and handed
    # to the official class where its __init__ asks AutoProcessor for it.
    image_processor = AutoImageProcessor.from_pretrained(checkpoint)
    video_processor = Qwen3VLVideoProcessor(
        patch_size=image_processor.patch_size,
        temporal_patch_size=image_processor.temporal_patch_size,
        merge_size=image_processor.merge_size,
        image_mean=list(image_processor.image_mean),
        image_std=list(image_processor.image_std),
        cap_pixels_per_frame=False,
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=AutoTokenizer.from_pretrained(checkpoint, padding_side="left"),
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    official.AutoProcessor = types.SimpleNamespace(from_pretrained=lambda *args, **kwargs: processor)
    reranker = official.Qwen3VLReranker(str(checkpoint), max_frames=spec["max_frames"], dtype=torch.float32)
    input_ids: list[list[int]] = []  # what the official tokenize gives each pair, truncated and all
    reranker.tokenize = _with_tensor_token_types(reranker.tokenize, input_ids)
    scores = []
    for case in spec["cases"]:
        inputs = {"query": case["query"], "documents": [case["document"]]}
        if "instruction" in case:
            inputs["instruction"] = case["instruction"]
        scores.extend(reranker.process(inputs))
    print(json.dumps({"scores": scores, "input_ids": input_ids, "nframes": _nframes(spec.get("nframes", []))}))


if __name__ == "__main__":
    main()
