"""Score (query, document) pairs with videos the official way and print the scores and token ids as JSON.

The prompt is written out by hand from ``docs/design.md`` ("Reference semantics", "Video"); the vision inputs
come from the official packages: qwen-vl-utils (``process_vision_info``: frame sampling, reading, resize) and
transformers' ``Qwen3VLProcessor`` with its ``Qwen3VLVideoProcessor`` (timestamps, temporal patches, pads); the
score is sigmoid(logit yes - logit no) at the last position of a plain ``Qwen3VLForConditionalGeneration``
forward in float32.

Usage: ``python run_reference.py CHECKPOINT CASES.json`` in a process whose path holds the oracle folder
(torchvision, decord, qwen-vl-utils: ``make oracle-deps``). CASES.json: ``{"max_frames": int, "cases":
[{"query": SIDE, "document": SIDE, "instruction"?: str}], "nframes": [[total, video_fps, fps, min_frames,
max_frames], ...]}`` where a SIDE is ``{"text"?: str, "images"?: [path], "videos"?: [path or [frame path]]}``.
Prints ``{"scores": [...], "input_ids": [[...], ...], "nframes": [...]}``.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the image oracle's prompt text

from stock_reference import INSTRUCTION, SYSTEM  # noqa: E402

# The official reranker's defaults (docs/design.md, "Reference semantics" and "Video").
MAX_LENGTH = 10240
IMAGE_MIN_PIXELS = 4 * 32 * 32
IMAGE_MAX_PIXELS = 1800 * 32 * 32
VIDEO_FPS = 1.0
FRAME_LIST_TOTAL_PIXELS = 10 * 768 * 32 * 32
PATCH_SIZE = 16  # what the official call passes qwen-vl-utils as image_patch_size

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"  # the processor writes each temporal group out


def import_torchvision() -> None:
    """torchvision, standing an empty module in for its fake-kernel registrations when its C operators do
    not load into this torch (a CUDA wheel on a CPU torch; tests/video_reference/README.md)."""
    try:
        importlib.import_module("torchvision")
        return
    except RuntimeError:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    importlib.import_module("torchvision")


def subsample(frames: list[str], max_frames: int) -> list[str]:
    """A frame list cut to ``max_frames`` as the official reranker cuts it before qwen-vl-utils sees it: indices
    ``np.linspace(0, len - 1, max_frames)`` truncated to int (docs/design.md, "Video", "A list of frames")."""
    import numpy as np

    if len(frames) <= max_frames:
        return frames
    return [frames[i] for i in np.linspace(0, len(frames) - 1, max_frames).astype(int).tolist()]


def vision_items(side: dict, max_frames: int) -> list[dict]:
    """The side's qwen-vl-utils elements in prompt order, videos then images, with the official settings: a file
    gets fps and max_frames, a frame list the total pixel budget, an image the image pixel bounds."""
    items = []
    for video in side.get("videos", []):
        if isinstance(video, list):
            frames = ["file://" + frame for frame in subsample(video, max_frames)]
            items.append({"type": "video", "video": frames, "total_pixels": FRAME_LIST_TOTAL_PIXELS})
        else:
            items.append({"type": "video", "video": "file://" + video, "fps": VIDEO_FPS, "max_frames": max_frames})
    for image in side.get("images", []):
        items.append(
            {
                "type": "image",
                "image": "file://" + image,
                "min_pixels": IMAGE_MIN_PIXELS,
                "max_pixels": IMAGE_MAX_PIXELS,
            }
        )
    return items


def side_text(side: dict) -> str:
    """A side as the chat template renders it: a block per video, then per image, then the text; NULL if empty."""
    body = VIDEO * len(side.get("videos", [])) + IMAGE * len(side.get("images", [])) + side.get("text", "")
    return body or "NULL"


def official_prompt(query: dict, document: dict, instruction: str) -> str:
    """docs/design.md, "Reference semantics": the rendered chat with the generation prompt."""
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
        f"<Instruct>: {instruction}<Query>:{side_text(query)}\n<Document>:{side_text(document)}"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


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
    from qwen_vl_utils import process_vision_info
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    # The tiny checkpoints ship an image processor and a tokenizer; the video processor takes the same patch
    # sizes, mean and std (a real checkpoint's video_preprocessor_config.json holds the same values).
    image_processor = AutoImageProcessor.from_pretrained(checkpoint)
    video_processor = Qwen3VLVideoProcessor(
        patch_size=image_processor.patch_size,
        temporal_patch_size=image_processor.temporal_patch_size,
        merge_size=image_processor.merge_size,
        image_mean=list(image_processor.image_mean),
        image_std=list(image_processor.image_std),
        cap_pixels_per_frame=False,  # no resize runs here (do_resize=False); this only silences its notice
    )
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor)
    model = Qwen3VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    vocab = tokenizer.get_vocab()
    yes_id, no_id = vocab["yes"], vocab["no"]

    scores, input_ids = [], []
    for case in spec["cases"]:
        query, document = case["query"], case["document"]
        items = vision_items(query, spec["max_frames"]) + vision_items(document, spec["max_frames"])
        images, videos, video_kwargs = process_vision_info(
            [{"role": "user", "content": items}],
            image_patch_size=PATCH_SIZE,
            return_video_kwargs=True,
            return_video_metadata=True,
        )
        metadata = None
        if videos is not None:
            videos, metadata = [v for v, _ in videos], [m for _, m in videos]
        inputs = processor(
            text=[official_prompt(query, document, case.get("instruction", INSTRUCTION))],
            images=images,
            videos=videos,
            video_metadata=metadata,
            do_resize=False,  # qwen-vl-utils resized already
            return_tensors="pt",
            **video_kwargs,  # do_sample_frames=False: qwen-vl-utils sampled already
        )
        ids = inputs["input_ids"][0].tolist()
        # The official truncation (tests/test_qwen_vocab.py checks the engine against it) cuts only prompts
        # longer than this; these cases are short, so the processor's ids are the official ids as they are.
        if len(ids) - 5 > MAX_LENGTH:
            raise SystemExit(f"a case of {len(ids)} tokens would be truncated; keep the video cases short")
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1].float()
        scores.append(float(torch.sigmoid(logits[yes_id] - logits[no_id])))
        input_ids.append(ids)
    print(json.dumps({"scores": scores, "input_ids": input_ids, "nframes": _nframes(spec.get("nframes", []))}))


if __name__ == "__main__":
    main()
