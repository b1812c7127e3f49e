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
