"""Dense (query-first) scores with videos equal the official path's: the official prompt written out from
``docs/design.md`` ("Reference semantics", "Video"), qwen-vl-utils' sampling, reading and resize, transformers'
Qwen3-VL processor (timestamps, temporal patches), then a plain forward of the model, within 1e-5 in float32
(``tests/video_reference``)."""

from __future__ import annotations

import pytest
from pictures import drawn_image
from video_clips import clip_frames, write_clip
from video_reference.oracle import OfficialRun

from minirerank_integrations import Candidate, MiniReranker, Query, RerankConfig
from minirerank_integrations.engine.video import smart_nframes
from minirerank_integrations.engine.video_settings import VideoSettings

MAX_FRAMES = 4  # a 7-frame list is subsampled, a 12-frame file at 4 fps gives its 4-frame minimum

#: (total frames, the file's fps, fps, min_frames, max_frames) for qwen-vl-utils' smart_nframes: long and short
#: files, odd bounds, fractional rates, fewer frames than the minimum, one frame.
NFRAMES = [
    [total, video_fps, fps, low, high]
    for total in (1, 2, 3, 5, 12, 29, 300, 7201)
    for video_fps in (4.0, 29.97, 60.0)
    for fps, low, high in ((1.0, 4, 64), (2.0, 4, 64), (0.5, 3, 9), (1.0, 2, 768))
]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    frames = clip_frames(7, seed=3)  # a list of 7: the official sampling keeps 4 of them
    frame_paths = []
    for index, frame in enumerate(frames):
        frame_paths.append(str(folder / f"frame{index}.png"))
        frame.save(frame_paths[-1])
    image = folder / "page.png"
    drawn_image(64, 96, 5).save(image)
    return {
        "clip": str(write_clip(folder / "clip.mov", clip_frames(12, seed=1))),  # 3 s at 4 fps
        "mp4": str(write_clip(folder / "clip.mp4", clip_frames(6, 96, 64, seed=2), codec="libx264")),
        "frames": frame_paths,
        "image": str(image),
    }


def cases(media):
    """(engine query, engine candidate, official query side, official document side)."""
    return [
        (  # text -> video file
            Query(text="a disc moving right"),
            Candidate(videos=[media["clip"]]),
            {"text": "a disc moving right"},
            {"videos": [media["clip"]]},
        ),
        (  # video (a list of frame files) -> text
            Query(videos=[media["frames"]]),
            Candidate(text="a disc crossing the frame"),
            {"videos": [media["frames"]]},
            {"text": "a disc crossing the frame"},
        ),
        (  # video file -> image
            Query(videos=[media["mp4"]]),
            Candidate(images=[media["image"]]),
            {"videos": [media["mp4"]]},
            {"images": [media["image"]]},
        ),
        (  # a side with a video and an image and text; the other side a video too
            Query(text="which clip", videos=[media["mp4"]]),
            Candidate(text="a caption", images=[media["image"]], videos=[media["frames"]]),
            {"text": "which clip", "videos": [media["mp4"]]},
            {"text": "a caption", "images": [media["image"]], "videos": [media["frames"]]},
        ),
    ]


def test_dense_video_scores_equal_the_official_path(tiny4_path, media, tmp_path):
    pairs = cases(media)
    run = OfficialRun(
        tiny4_path,
        [{"query": oq, "document": od} for _, _, oq, od in pairs],
        max_frames=MAX_FRAMES,
        workdir=tmp_path,
        nframes=NFRAMES,
    )
    config = RerankConfig(format="query_first", video_max_frames=MAX_FRAMES)
    engine = MiniReranker.from_pretrained(tiny4_path, config=config)
    ids = []
    for query, candidate, _, _ in pairs:
        segment, _ = engine.segments(engine.prepare(query, "q"), engine.prepare(candidate, "d"))
        ids.append(list(segment.input_ids))
    scores = engine.score([(q, c) for q, c, _, _ in pairs])
    official = run.result()
    mine = []
    for total, video_fps, fps, min_frames, max_frames in NFRAMES:
        settings = VideoSettings(fps=fps, min_frames=min_frames, max_frames=max_frames)
        try:
            mine.append(smart_nframes(total, video_fps, settings))
        except ValueError:
            mine.append(None)
    assert mine == official["nframes"]
    for index, expected in enumerate(official["input_ids"]):
        assert ids[index] == expected, f"case {index}: token ids differ"
    assert scores == pytest.approx(official["scores"], abs=1e-5)
    # The cases are not degenerate: the videos move the score.
    assert max(scores) - min(scores) > 1e-3
