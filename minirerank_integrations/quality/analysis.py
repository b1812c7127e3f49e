"""The paper's layer-wise analysis, computed with the engine's own functions.

- :func:`exit_curve`: ranking quality (Hit@1, NDCG@5, MRR@10 per family) when the score is read after each
  decoder layer, i.e. the reranker's configuration with every possible exit layer. It shows how early the
  ranking saturates (the paper exits near 58% of depth).
- :func:`attention_share`: per layer, the share of attention mass that suffix tokens pay to prefix tokens in
  the vision-first prompt when everything may attend everywhere. It shows which layers actually read the
  visual prefix (the paper places the interaction band where this share concentrates).

Both run on :class:`~minirerank_integrations.quality.data.RerankTask` lists. The plots need matplotlib
(``pip install 'minirerank-integrations[eval]'``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..engine.config import RerankConfig
from ..engine.layers import join_pairs, rotary, run_layers
from ..engine.modeling import Backbone, SegmentStates
from ..errors import InputError
from .evaluation import METRICS, OVERALL, evaluate

if TYPE_CHECKING:
    from ..engine.inputs import Candidate, Query
    from ..engine.reranker import MiniReranker
    from .data.tasks import RerankTask

__all__ = ["attention_share", "exit_curve", "plot_attention_share", "plot_exit_curve"]

#: Pairs per forward pass of :func:`attention_share`. Eager attention keeps [batch, heads, t, t] probabilities
#: per layer: 4 pairs of 2,000 tokens with 16 heads are ~1 GiB in float32.
ANALYSIS_BATCH = 4


# -- exit curve -------------------------------------------------------------------------------------------


def exit_curve(
    reranker: MiniReranker,
    tasks: Sequence[RerankTask],
    layers: Iterable[int] | None = None,
    *,
    progress: bool = False,
) -> dict[int, dict[str, dict[str, float]]]:
    """Ranking quality of ``reranker``'s configuration with each exit layer.

    For each exit layer ``L`` (default 1..depth) the current configuration is evaluated with ``exit_layer=L``
    and its band clipped to end at or before ``L`` (``(start, end)`` becomes ``(min(start, L), min(end, L))``;
    the query-first format has no band to clip). Everything else (format, pruning, prompt) is kept.

    Returns ``{L: metrics}`` where ``metrics[family][metric]`` is :attr:`EvalReport.metrics
    <minirerank_integrations.quality.evaluation.EvalReport.metrics>` of :func:`~minirerank_integrations.quality.evaluation.evaluate`
    (families plus ``"overall"``). The entry at the configuration's own exit layer is exactly ``evaluate``
    of the unmodified configuration.

    The reranker's configuration is restored afterwards, also when an evaluation raises; the engine's lock
    is held throughout, so other threads never score with a temporary configuration.

    Raises:
        ConfigError: a layer outside ``1..depth``.
        InputError: no tasks (from ``evaluate``).
    """
    original = reranker.config
    depth = reranker.num_layers
    curve: dict[int, dict[str, dict[str, float]]] = {}
    for exit_layer in range(1, depth + 1) if layers is None else layers:
        with reranker.using(_at_exit(original, exit_layer)):
            curve[exit_layer] = evaluate(reranker, tasks, progress=progress).metrics
    return curve


def _at_exit(config: RerankConfig, exit_layer: int) -> RerankConfig:
    """``config`` exiting after ``exit_layer`` layers, its band clipped to the layers that run."""
    band = config.band
    if config.format == "query_first" or band is None:
        band = None  # query_first: one segment attending everywhere; None: the full band of the new exit
    else:
        start, end = band
        band = (min(start, exit_layer), min(end, exit_layer))
    # Validated anew (not model_copy): a bad exit layer raises ConfigError naming it.
    return RerankConfig(**{**config.model_dump(), "exit_layer": exit_layer, "band": band})


# -- attention share --------------------------------------------------------------------------------------


@torch.no_grad()
def attention_share(reranker: MiniReranker, tasks: Sequence[RerankTask], max_pairs: int = 64) -> list[float]:
    """Per decoder layer (index 0..depth-1, as in ``band``), the average share of attention mass that suffix
    tokens pay to prefix tokens.

    Pairs are scored in the vision-first format with the band covering every layer and no early exit, so
    every token may attend to every earlier token (the stock model on the vision-first prompt), and with all
    visual tokens kept. The instruction, prefix side and image sizes come from the reranker's configuration.
    The share is averaged over heads, then over the suffix tokens of a pair, then over pairs (each pair counts
    once). Pairs are taken round-robin: candidate 0 of every task, then candidate 1, ..., so a small
    ``max_pairs`` still covers every task and family.

    The reranker's configuration is restored afterwards.

    Raises:
        InputError: ``max_pairs < 1``, or the tasks hold no candidates.
    """
    if max_pairs < 1:
        raise InputError(f"max_pairs must be >= 1, got {max_pairs}")
    pairs = _spread_pairs(tasks, max_pairs)
    if not pairs:
        raise InputError("the tasks hold no (query, candidate) pairs; pass at least one task with candidates")
    original = reranker.config
    depth = reranker.num_layers
    totals = torch.zeros(depth, dtype=torch.float64)  # [layers] sum over pairs
    full = RerankConfig(
        **{**original.model_dump(), "format": "vision_first", "exit_layer": None, "band": None, "keep_ratio": 1.0}
    )
    with reranker.using(full):
        sides = reranker.prepare_pairs(pairs)
        cache: dict = {}  # vision features, shared across batches (a query image recurs in every pair)
        for start in range(0, len(sides), ANALYSIS_BATCH):
            prefixes: list[SegmentStates] = []
            suffixes: list[SegmentStates] = []
            for q, d in sides[start : start + ANALYSIS_BATCH]:
                prefix, suffix = reranker.segments(q, d)
                p_states = reranker.states(prefix, cache)
                prefixes.append(p_states)
                suffixes.append(reranker.states(suffix, cache).shifted(p_states.next_position))  # type: ignore[arg-type]
            shares = _suffix_to_prefix_shares(reranker.backbone, prefixes, suffixes, (0, depth))
            totals += shares.sum(dim=1).double().cpu()
    return (totals / len(sides)).tolist()


def _spread_pairs(tasks: Sequence[RerankTask], max_pairs: int) -> list[tuple[Query, Candidate]]:
    """Up to ``max_pairs`` (query, candidate) pairs, candidate j of every task before candidate j + 1."""
    pairs: list[tuple[Query, Candidate]] = []
    longest = max((len(task.candidates) for task in tasks), default=0)
    for j in range(longest):
        for task in tasks:
            if j < len(task.candidates):
                pairs.append((task.query, task.candidates[j]))
                if len(pairs) == max_pairs:
                    return pairs
    return pairs


def _suffix_to_prefix_shares(
    backbone: Backbone,
    prefixes: list[SegmentStates],
    suffixes: list[SegmentStates],  # positions already shifted by each prefix's next_position
    band: tuple[int, int],
) -> torch.Tensor:
    """``layers.reference_logits`` (without the shared start), run through every layer, recording how much
    attention the suffix pays to the prefix. Returns [layers, batch]: per layer and pair, the attention mass on
    prefix keys, averaged over heads and suffix tokens.

    Built by ``layers.join_pairs`` and run by ``layers.run_layers``, as ``reference_logits`` is, so the shares
    describe exactly the forward the engine defines (``docs/design.md``, "The miniReranker computation").
    """
    pairs = join_pairs(prefixes, suffixes)
    in_suffix = pairs.in_suffix  # [batch, t]
    in_prefix = pairs.valid & ~in_suffix  # [batch, t]; left padding is neither
    suffix_tokens = in_suffix.sum(dim=1).float()  # [batch]
    rows: list[torch.Tensor] = []  # per layer: [batch]

    def record(_layer_idx: int, probs: torch.Tensor) -> None:  # probs [batch, heads, t, t]
        on_prefix = (probs.float() * in_prefix[:, None, None, :]).sum(dim=-1)  # [batch, heads, t] per query token
        per_token = on_prefix.mean(dim=1)  # [batch, t] averaged over heads
        rows.append((per_token * in_suffix).sum(dim=1) / suffix_tokens)  # [batch] averaged over suffix tokens

    cos, sin = rotary(backbone, pairs.x, pairs.positions)
    every_layer = range(len(backbone.layers))
    run_layers(backbone, pairs.x, cos, sin, pairs.deepstack, every_layer, pairs.layer_masks(band), on_probs=record)
    return torch.stack(rows)  # [layers, batch]


# -- plots ------------------------------------------------------------------------------------------------


def plot_exit_curve(
    curve: Mapping[int, Mapping[str, Mapping[str, float]]], path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Save :func:`exit_curve` as a PNG: one panel per metric, one line per family (overall in black).

    Returns the path written.
    """
    if not curve:
        raise InputError("the exit curve is empty; compute it with exit_curve() on at least one layer")
    figure = _figure(figsize=(4.2 * len(METRICS), 3.6))
    layers = sorted(curve)
    families = sorted({family for metrics in curve.values() for family in metrics if family != OVERALL})
    axes = figure.subplots(1, len(METRICS), squeeze=False)[0]
    for ax, metric in zip(axes, METRICS):
        for family in families:
            ax.plot(layers, [curve[layer][family][metric] for layer in layers], marker="o", label=family)
        if all(OVERALL in curve[layer] for layer in layers):
            values = [curve[layer][OVERALL][metric] for layer in layers]
            ax.plot(layers, values, marker="s", color="black", linewidth=2, label=OVERALL)
        ax.set_xlabel("exit layer (decoder layers run)")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.set_xticks(layers)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small")
    figure.suptitle(title or "Ranking quality by exit layer")
    return _save(figure, path)


def plot_attention_share(
    shares: Sequence[float],
    path: str | os.PathLike,
    *,
    band: tuple[int, int] | None = None,
    band_label: str | None = None,
    title: str | None = None,
) -> Path:
    """Save :func:`attention_share` as a PNG bar chart over decoder layers (0-based, as in ``band``).

    ``band``: layers [start, end) to shade, e.g. a configuration's interaction band, named ``band_label`` in
    the legend. Returns the path written.
    """
    if not shares:
        raise InputError("no attention shares to plot; compute them with attention_share()")
    figure = _figure(figsize=(max(5.0, 0.3 * len(shares) + 2.0), 3.6))
    ax = figure.subplots()
    layers = list(range(len(shares)))
    if band is not None and band[1] > band[0]:
        label = band_label or f"band {tuple(band)}"
        ax.axvspan(band[0] - 0.5, band[1] - 0.5, color="tab:orange", alpha=0.25, label=label, zorder=0)
    ax.bar(layers, list(shares), color="tab:blue", zorder=2)
    if band is not None and band[1] > band[0]:
        ax.legend(fontsize="small")
    ax.set_xticks(layers if len(layers) <= 32 else layers[:: (len(layers) + 31) // 32])
    ax.set_xlabel("decoder layer (0-based)")
    ax.set_ylabel("suffix attention on the prefix (share)")
    ax.set_title(title or "Attention from suffix tokens to the prefix, by layer")
    ax.set_ylim(0, min(1.0, max(max(shares) * 1.15, 1e-3)))
    ax.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def _figure(figsize: tuple[float, float]):
    """A figure on an Agg canvas: no pyplot, so no global backend state and no display is touched."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "plotting needs matplotlib; install it with: pip install 'minirerank-integrations[eval]'"
        ) from exc
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    return figure


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return path
