"""The public surface is small and pinned."""

import minirerank_integrations


def test_all_is_pinned():
    assert sorted(minirerank_integrations.__all__) == [
        "CacheError",
        "Candidate",
        "CandidateError",
        "ConfigError",
        "DEMO_MODEL",
        "ImageLoadError",
        "InputError",
        "MiniRerankError",
        "MiniReranker",
        "ModelLoadError",
        "PdfPage",
        "Query",
        "RerankConfig",
        "RerankRequest",
        "RerankResult",
        "RerankResults",
        "ScoreError",
        "SkippedCandidate",
        "StoreConfig",
        "WorkCounters",
        "pdf_pages",
    ]
    for name in minirerank_integrations.__all__:
        assert getattr(minirerank_integrations, name) is not None


def test_errors_share_one_base():
    from minirerank_integrations import errors

    for name in ["CacheError", "CandidateError", "ConfigError", "ImageLoadError", "InputError", "ModelLoadError", "ScoreError"]:
        assert issubclass(getattr(errors, name), errors.MiniRerankError)
