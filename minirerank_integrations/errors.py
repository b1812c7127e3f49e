"""The few exceptions the engine raises; each message names the bad value and the fix."""

from __future__ import annotations


class MiniRerankError(Exception):
    """Base class of every error raised by minirerank-integrations."""


class ConfigError(MiniRerankError, ValueError):
    """A configuration value is invalid, or does not fit the loaded model."""


class ModelLoadError(MiniRerankError):
    """A checkpoint could not be loaded as a Qwen3-VL reranker."""


class InputError(MiniRerankError, ValueError):
    """A query or candidate cannot be turned into model inputs."""


class ImageLoadError(InputError):
    """An image source could not be read or decoded (missing file, corrupt bytes, URL, bomb)."""


class VideoLoadError(InputError):
    """A video source could not be read or decoded (missing or corrupt file, no frames, URL), or it is over the
    frame or pixel budgets; names the item and its side."""


class MissingExtraError(MiniRerankError, ImportError):
    """An optional dependency is needed and absent; names the extra to install (e.g. the ``video`` extra,
    ``pip install 'minirerank-integrations[video]'``, for PyAV when a video file must be decoded)."""


class CandidateError(InputError):
    """A candidate could not be scored; names the candidate's index (and id) and the cause."""

    def __init__(self, index: int, cause: BaseException, candidate_id: str | None = None) -> None:
        self.index = index
        self.candidate_id = candidate_id
        self.cause = cause
        named = f"candidate {index}" + (f" (id {candidate_id!r})" if candidate_id is not None else "")
        super().__init__(f"{named}: {cause}")


class ScoreError(MiniRerankError):
    """A computed score is not finite (NaN or inf): the call fails instead of ranking it; names the pair."""


class TrainingError(MiniRerankError):
    """A training or adaptation step met a non-finite loss or gradient; names the step. Nothing of that step
    is applied or saved: the last saved state stays as it was."""


class CallCancelled(MiniRerankError):
    """A call was cancelled (its ``arerank`` task was cancelled or timed out) and stopped between batches."""


class CacheError(MiniRerankError):
    """A prefix-store entry is unreadable (bad header, checksum or shapes); it is never served."""
