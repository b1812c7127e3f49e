"""The fast path with videos: a video side is a vision-first prefix, cached under a key that binds its bytes
(or its frames) and every sampling setting, pruned by the embedder like an image; fast equals the naive
reference. And the typed errors a bad video gives (``docs/design.md``, "Video")."""

from __future__ import annotations

import sys
import time

import av
import numpy as np
import pytest
from pictures import drawn_image
from video_clips import clip_frames, write_clip

from minirerank_integrations import (
    Candidate,
    CandidateError,
    MiniReranker,
    MissingExtraError,
    Query,
    RerankConfig,
    VideoLoadError,
)

#: Small frames stay small: 16 merged tokens per temporal group, 2 or 4 groups per video.
SMALL = {"video_frame_min_pixels": 16 * 32 * 32, "video_max_frames": 8}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        "file": str(write_clip(folder / "a.mov", clip_frames(8, 128, 128, seed=1))),  # 2 s at 4 fps: 4 frames
        "mp4": write_clip(folder / "b.mp4", clip_frames(6, 128, 96, seed=2), codec="libx264"),  # a PathLike
        "frames": clip_frames(5, 64, 64, seed=3),  # PIL frames, padded to 6
    }


def video_pairs(clips):
    page, photo = drawn_image(64, 96, 5), drawn_image(96, 64, 6)
    return [
        (Query(text="a disc moving right"), Candidate(videos=[clips["file"]])),  # text -> video
        (Query(text="a disc moving right"), Candidate(images=[page])),  # an image candidate in the same batch
        (Query(text="a disc moving right"), Candidate(text="a clip", videos=[clips["frames"]], images=[photo])),
        (Query(videos=[clips["mp4"]]), Candidate(text="a blue disc")),  # video -> text
        (Query(videos=[clips["mp4"]]), Candidate(images=[page])),  # video -> image
        (Query(text="which one", videos=[clips["frames"]]), Candidate(videos=[clips["file"]], text="a disc")),
    ]


def configs(depth):
    return [
        RerankConfig.preset("paper", depth, **SMALL),  # embedder-guided pruning, the document side cached
        RerankConfig(  # the query side cached, random pruning, the instruction in the prefix
            format="vision_first",
            prefix_side="query",
            exit_layer=depth - 1,
            band=(1, depth - 1),
            keep_ratio=0.4,
            pruning_guide="random",
            instruction_in_prefix=True,
            **SMALL,
        ),
    ]


@pytest.mark.parametrize("config_index", range(2))
def test_fast_path_equals_naive_reference_with_videos(tiny4_path, clips, config_index):
    engine = MiniReranker.from_pretrained(tiny4_path, config="dense")
    engine.config = configs(engine.num_layers)[config_index]
    pairs = video_pairs(clips)
    fast = engine.score(pairs)
    naive = engine.reference_scores(pairs)
    assert fast == pytest.approx(naive, abs=1e-4)
    assert len({round(s, 5) for s in fast}) > 2  # the pairs are told apart


def test_a_warm_call_reads_the_stored_video_prefix(tiny4_path, clips):
    engine = MiniReranker.from_pretrained(tiny4_path, config=RerankConfig.preset("paper", 4, **SMALL))
    query = Query(text="a disc moving right")
    candidates = [Candidate(videos=[clips["file"]]), Candidate(videos=[clips["frames"]]), Candidate(text="x")]
    cold = engine.rerank(query, candidates)
    computed = engine.counters.prefix_computations
    assert computed == 3 and engine.counters.prefix_hits == 0
    encodings = engine.counters.vision_encodings
    warm = engine.rerank(query, candidates)
    assert engine.counters.prefix_hits == 3 and engine.counters.prefix_computations == computed
    assert engine.counters.vision_encodings == encodings  # nothing encoded again: the prefixes were read
    assert [(r.index, r.score) for r in warm] == [(r.index, pytest.approx(r.score, abs=1e-6)) for r in cold]


def test_a_sampling_setting_gives_a_video_new_keys(tiny4_path, clips):
    engine = MiniReranker.from_pretrained(tiny4_path, config=RerankConfig.preset("paper", 4, **SMALL))
    query = Query(text="a disc")
    candidates = [
        Candidate(videos=[clips["file"]]),
        Candidate(videos=[clips["frames"]]),
        Candidate(images=[drawn_image(64, 64, 1)]),
    ]
    engine.rerank(query, candidates)
    for change in ({"video_fps": 2.0}, {"video_max_frames": 4}, {"video_total_pixels": 10**6}):
        engine.counters.reset()
        engine.config = RerankConfig.preset("paper", 4, **{**SMALL, **change})
        engine.rerank(query, candidates)
        # Each video is computed again under the new setting; the image's prefix does not depend on it.
        assert (engine.counters.prefix_computations, engine.counters.prefix_hits) == (2, 1), change


def test_a_changed_file_gets_a_new_key(tiny4_path, tmp_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config=RerankConfig.preset("paper", 4, **SMALL))
    path = write_clip(tmp_path / "clip.mov", clip_frames(8, 128, 128, seed=4))
    query, candidate = Query(text="a disc"), Candidate(videos=[str(path)])
    first = engine.score([(query, candidate)])[0]
    assert engine.score([(query, candidate)])[0] == pytest.approx(first, abs=1e-6)
    assert engine.counters.prefix_hits == 1
    write_clip(path, clip_frames(8, 128, 128, seed=5))  # same name, other frames
    engine.counters.reset()
    second = engine.score([(query, candidate)])[0]
    assert engine.counters.prefix_computations == 1 and engine.counters.prefix_hits == 0
    assert second != pytest.approx(first, abs=1e-6)


# -- typed errors -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny4_path):
    return MiniReranker.from_pretrained(tiny4_path, config=RerankConfig.preset("paper", 4, **SMALL))


def _cause(engine, candidate, query=None):
    with pytest.raises(CandidateError) as info:
        engine.rerank(query or Query(text="a disc"), [Candidate(text="fine"), candidate])
    assert info.value.index == 1
    return info.value.cause


def test_an_unreadable_video_names_the_candidate_and_the_file(engine, tmp_path):
    cause = _cause(engine, Candidate(videos=[str(tmp_path / "missing.mp4")]))
    assert isinstance(cause, VideoLoadError)
    assert "video 0" in str(cause) and "missing.mp4" in str(cause) and "no such file" in str(cause)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 not a video " * 50)
    cause = _cause(engine, Candidate(videos=[junk]))
    assert isinstance(cause, VideoLoadError) and "not a decodable video" in str(cause)
    with pytest.raises(VideoLoadError, match="the query's video 0: .*no such file"):
        engine.rerank(Query(videos=[str(tmp_path / "gone.mov")]), [Candidate(text="x")])


def test_an_empty_video_is_refused(engine, tmp_path):
    assert "empty video (no frames)" in str(_cause(engine, Candidate(videos=[[]])))
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    cause = _cause(engine, Candidate(videos=[str(empty)]))
    assert isinstance(cause, VideoLoadError) and "empty video data (0 bytes)" in str(cause)
    sound = tmp_path / "sound.wav"  # a decodable file without a video stream
    with av.open(str(sound), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
    cause = _cause(engine, Candidate(videos=[str(sound)]))
    assert isinstance(cause, VideoLoadError) and "no video stream" in str(cause)


def test_a_video_over_the_frame_budget_is_refused(tiny4_path, clips):
    engine = MiniReranker.from_pretrained(
        tiny4_path, config=RerankConfig.preset("paper", 4, video_max_source_frames=5, **SMALL)
    )
    cause = _cause(engine, Candidate(videos=[clips["file"]]))
    assert isinstance(cause, VideoLoadError) and "8 frames, more than the 5 allowed" in str(cause)
    cause = _cause(engine, Candidate(videos=[clip_frames(6, seed=1)]))
    assert isinstance(cause, VideoLoadError) and "6 frames, more than the 5 allowed" in str(cause)
    # More tokens than max_length: the side is refused before any model work.
    small = MiniReranker.from_pretrained(tiny4_path, config=RerankConfig.preset("paper", 4, max_length=20, **SMALL))
    assert "more than max_length 20" in str(_cause(small, Candidate(videos=[clips["file"]])))


def test_without_pyav_a_video_file_names_the_extra(engine, clips, tmp_path, monkeypatch):
    path = write_clip(tmp_path / "new.mov", clip_frames(4, seed=9))  # never seen: its header must be read
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    cause = _cause(engine, Candidate(videos=[path]))
    assert isinstance(cause, MissingExtraError) and isinstance(cause, ImportError)
    assert "pip install 'minirerank-integrations[video]'" in str(cause)
    # A list of frames needs no decoder.
    assert len(engine.rerank(Query(text="a disc"), [Candidate(videos=[clips["frames"]])])) == 1


def test_skip_leaves_out_a_bad_video_candidate(engine, clips, tmp_path):
    candidates = [Candidate(videos=[clips["file"]]), Candidate(videos=[str(tmp_path / "nope.mp4")], id="bad")]
    results = engine.rerank(Query(text="a disc"), candidates, on_error="skip")
    assert [r.index for r in results] == [0]
    assert [(s.index, s.id) for s in results.skipped] == [(1, "bad")]
    assert "video 0" in results.skipped[0].error and "no such file" in results.skipped[0].error


def test_video_inputs_are_checked_when_built():
    from minirerank_integrations import InputError

    with pytest.raises(InputError, match="wrap one video in a list"):
        Query(videos="clip.mp4")
    with pytest.raises(InputError, match="video 0: frame 1 must be an image source"):
        Candidate(videos=[[drawn_image(64, 64, 1), 3]])
    with pytest.raises(InputError, match="video 1 must be a path, URL, bytes or a list of frames"):
        Candidate(videos=["a.mp4", 7])
    frames = [drawn_image(64, 64, 1)]
    candidate = Candidate(videos=[frames, bytearray(b"\x00\x01")])
    frames.append(drawn_image(64, 64, 2))  # the caller's list may change; the candidate keeps what it was given
    assert candidate.videos[0] == tuple(frames[:1]) and candidate.videos[1] == b"\x00\x01"
    assert not Candidate(videos=[b"x"]).is_empty and Query(videos=[b"x"]).videos == (b"x",)


def test_a_video_url_data_uri_and_bytes_share_the_file_key(tiny4_path, clips):
    import base64
    from pathlib import Path

    data = Path(clips["file"]).read_bytes()
    fetched = []

    def fetcher(url: str) -> bytes:
        fetched.append(url)
        return data

    engine = MiniReranker.from_pretrained(
        tiny4_path, config=RerankConfig.preset("paper", 4, **SMALL), image_fetcher=fetcher
    )
    query = Query(text="a disc")
    first = engine.score([(query, Candidate(videos=[clips["file"]]))])[0]
    uri = "data:video/quicktime;base64," + base64.b64encode(data).decode()
    others = [Candidate(videos=["https://example.test/a.mov"]), Candidate(videos=[data]), Candidate(videos=[uri])]
    engine.counters.reset()
    scores = engine.score([(query, c) for c in others])
    assert fetched == ["https://example.test/a.mov"]
    assert engine.counters.prefix_computations == 0 and engine.counters.prefix_hits == 1  # one prefix, the file's
    assert scores == pytest.approx([first] * 3, abs=1e-6)
    with pytest.raises(CandidateError, match="URLs are not fetched by default"):
        MiniReranker.from_pretrained(tiny4_path, config="dense").rerank(query, [others[0]])
    with pytest.raises(CandidateError, match="data URI media type 'image/png' is not a video type"):
        engine.rerank(query, [Candidate(videos=["data:image/png;base64,AAAA"])])


def test_containers_without_a_frame_count_and_too_short_files(engine, tmp_path):
    frames = clip_frames(8, 128, 128, seed=6)
    mov, mkv = write_clip(tmp_path / "a.mov", frames), write_clip(tmp_path / "a.mkv", frames, codec="ffv1")
    query = Query(text="a disc")
    # Matroska records no frame count (its packets are counted); the lossless frames are the same pixels.
    scores = engine.score([(query, Candidate(videos=[mov])), (query, Candidate(videos=[mkv]))])
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)
    one = write_clip(tmp_path / "one.mov", frames[:1])
    cause = _cause(engine, Candidate(videos=[one]))
    assert isinstance(cause, VideoLoadError) and "at least 2 frames" in str(cause)


def test_a_seen_video_file_is_not_read_again_until_it_changes(engine, tmp_path, monkeypatch):
    from minirerank_integrations.engine import image_keys, video
    from minirerank_integrations.engine.video import VideoProcessing, VideoSettings, prepare_video

    monkeypatch.setattr(image_keys, "SETTLE_SECONDS", 0.05)  # settled after 50 ms instead of 2 s
    reads = []
    real_read = video.read_source_file
    monkeypatch.setattr(video, "read_source_file", lambda path, *a, **k: reads.append(path) or real_read(path, *a, **k))
    path = write_clip(tmp_path / "seen.mov", clip_frames(8, 128, 128, seed=7))
    time.sleep(0.1)
    query, candidate = Query(text="a disc"), Candidate(videos=[str(path)])
    cold = engine.score([(query, candidate)])[0]
    assert len(reads) == 1  # read to key it; its frames decoded from those bytes
    warm = engine.score([(query, candidate)])[0]
    assert len(reads) == 1 and warm == pytest.approx(cold, abs=1e-6)  # a stat, no read: the prefix is stored
    # Seen but not stored: its bytes are read when its frames are decoded, and checked against the key.
    settings, processing = VideoSettings(**{k.removeprefix("video_"): v for k, v in SMALL.items()}), VideoProcessing()
    seen = prepare_video(str(path), settings=settings, processing=processing)
    assert len(reads) == 1
    write_clip(path, clip_frames(8, 128, 128, seed=8))  # the file changes before its frames are needed
    with pytest.raises(VideoLoadError, match="the file changed while it was in use"):
        seen.frames  # noqa: B018
    engine.counters.reset()
    changed = engine.score([(query, candidate)])[0]  # a new stamp: read, keyed and computed again
    assert engine.counters.prefix_computations == 1 and changed != pytest.approx(cold, abs=1e-6)
