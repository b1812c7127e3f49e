"""What the vision tower hands the decoder: linear probes of labelled images' vision features.

:func:`vision_probe` fits, per labelled attribute (colour, shape, page title, ...), a logistic regression on
each image's mean merged vision token (the tokens the decoder reads) and reports its accuracy on held-out
images. An attribute the probe cannot tell apart is lost before the decoder sees it, so ranking errors on it
call for vision training rather than more ranking steps. Needs scikit-learn
(``pip install 'minirerank-integrations[eval]'``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from ..engine.images import image_digest, prepare_image
from ..engine.inputs import ImageSource
from ..errors import InputError

if TYPE_CHECKING:
    from ..engine.reranker import MiniReranker

__all__ = ["vision_probe"]

#: Images per vision-encoder call.
ENCODE_BATCH = 64


@torch.no_grad()
def vision_probe(
    reranker: MiniReranker,
    images: Sequence[ImageSource],
    labels: Sequence[Mapping[str, str]],
    *,
    held_out: float = 0.25,
    seed: int = 0,
) -> dict[str, float]:
    """Held-out accuracy, per attribute, of a linear classifier on the reranker's vision features.

    ``labels[i]`` holds image ``i``'s attributes (``{"title": "Garden", "header": "red"}``); every label
    names the same attributes. The images are shuffled with ``seed``; a ``held_out`` share is kept for
    testing and the rest trains one multinomial logistic regression per attribute on the standardised mean
    merged token. Images are prepared as the reranker prepares candidates (its pixel bounds).

    Returns ``{attribute: accuracy}``; chance is about 1 / (number of values).

    Raises:
        InputError: ``images`` and ``labels`` differ in length, a label names other attributes than the
            first, an attribute takes a single value, or fewer than two images would be trained or tested on.
        ImageLoadError: an image cannot be decoded.
    """
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        raise ImportError(
            "vision_probe needs scikit-learn; install it with: pip install 'minirerank-integrations[eval]'"
        ) from exc

    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} labels")
    if not labels:
        raise InputError("no labelled images")
    names = sorted(labels[0])
    for index, label in enumerate(labels):
        if sorted(label) != names:
            raise InputError(f"label {index} names {sorted(label)}; label 0 names {names}")
    for name in names:
        if len({label[name] for label in labels}) < 2:
            raise InputError(f"attribute {name!r} takes one value in every label; a probe needs two or more")
    order = list(range(len(images)))
    random.Random(seed).shuffle(order)
    n_test = round(held_out * len(order))
    test, train = order[:n_test], order[n_test:]
    if len(test) < 2 or len(train) < 2:
        raise InputError(f"{len(images)} images leave {len(train)} to train and {len(test)} to test on; need 2 each")

    features = _mean_tokens(reranker, images)
    accuracy = {}
    for name in names:
        target = [labels[i][name] for i in range(len(labels))]
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        probe.fit(features[train], [target[i] for i in train])
        accuracy[name] = float(probe.score(features[test], [target[i] for i in test]))
    return accuracy


def _mean_tokens(reranker: MiniReranker, images: Sequence[ImageSource]):
    """[images, hidden] float64 array: each image's merged vision tokens averaged."""
    backbone, config = reranker.backbone, reranker.config
    rows = []
    for start in range(0, len(images), ENCODE_BATCH):
        prepared = []
        for source in images[start : start + ENCODE_BATCH]:
            image = prepare_image(source, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
            prepared.append(backbone.prepared_image(image, image_digest(image)))
        rows += [merged.float().mean(0) for merged, _ in backbone.encode_images(prepared)]
    return torch.stack(rows).double().cpu().numpy()
