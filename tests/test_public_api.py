"""The public surface is small and pinned."""

import minirerank_integrations


def test_all_is_pinned():
    assert sorted(minirerank_integrations.__all__) == [
        "CacheError",
        "CallCancelled",
        "Candidate",
        "CandidateError",
        "ConfigError",
        "DEMO_MODEL",
        "ImageFetcher",
        "ImageLoadError",
        "InputError",
        "MiniRerankError",
        "MiniReranker",
        "MissingExtraError",
        "ModelLoadError",
        "OnError",
        "PdfPage",
        "PrecacheOutcome",
        "PrecacheReport",
        "PresetName",
        "Query",
        "RerankConfig",
        "RerankRequest",
        "RerankResult",
        "RerankResults",
        "ScoreError",
        "SkippedCandidate",
        "StoreConfig",
        "TrainingError",
        "VideoLoadError",
        "VideoSource",
        "WorkCounters",
        "copied_metadata",
        "default_device",
        "fetch_image",
        "fetch_source",
        "is_image_file",
        "is_image_string",
        "pdf_pages",
    ]
    for name in minirerank_integrations.__all__:
        assert getattr(minirerank_integrations, name) is not None


def test_errors_share_one_base():
    from minirerank_integrations import errors

    for name in [
        "CacheError",
        "CallCancelled",
        "CandidateError",
        "ConfigError",
        "ImageLoadError",
        "InputError",
        "MissingExtraError",
        "ModelLoadError",
        "ScoreError",
        "TrainingError",
        "VideoLoadError",
    ]:
        assert issubclass(getattr(errors, name), errors.MiniRerankError)


def test_video_errors_are_the_expected_kinds():
    from minirerank_integrations import errors

    assert issubclass(errors.VideoLoadError, errors.InputError)
    # A missing extra is an ImportError too, so code that guards an optional import catches it.
    assert issubclass(errors.MissingExtraError, ImportError)
