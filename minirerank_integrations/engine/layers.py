"""The layer loop: one explicit pass over ``language_model.layers`` where the band masks, the early
exit and the pruned positions are visible.

``reference_logits`` is the definition of a configuration (``docs/design.md``, "The miniReranker computation"):
the whole concatenated sequence, a per-layer mask. The fast path (``compute_prefix``, ``compute_suffix_preband``,
``pair_logits``) computes the same numbers with less work, and a test holds them equal. Every loop, the reference's
included, is one call of :func:`run_layers`, the one layer-loop body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextDecoderLayer, rotate_half

from ..store import PrefixEntry
from ..store.window import gather_window
from .attention import Mask, attend, causal_mask, eager_attention, masked_scores
from .modeling import Backbone, SegmentStates


def rotary(backbone: Backbone, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [batch, tokens, head_dim] for M-RoPE positions [3, batch, tokens]."""
    return backbone.rotary(x, positions)


def decoder_layer(layer: torch.nn.Module) -> Qwen3VLTextDecoderLayer:
    """``layer`` as the Qwen3-VL decoder layer it is: ``language_model.layers`` is a ``ModuleList``, whose items
    the type checker only knows as modules (LoRA wraps the projections, never the layer)."""
    return cast(Qwen3VLTextDecoderLayer, layer)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The stock ``apply_rotary_pos_emb`` on one tensor (query and key may cover different tokens)."""
    return (x * cos.unsqueeze(1)) + (rotate_half(x) * sin.unsqueeze(1))


def layer_forward(
    layer: torch.nn.Module,
    x: torch.Tensor,  # [batch, tokens, hidden]
    cos: torch.Tensor,  # [batch, tokens, head_dim]
    sin: torch.Tensor,
    mask: Mask,  # [batch, 1, tokens, past + tokens] bool, or None: causal, unpadded (see Mask)
    past: tuple[torch.Tensor, torch.Tensor] | None = None,  # [batch, kv_heads, past, head_dim] each
    *,
    last_only: bool = False,
    kv_only: bool = False,
    want_probs: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One Qwen3-VL decoder layer (the stock layer's math, step by step).

    Returns (output, own keys, own values, attention probs). ``kv_only`` stops after the key/value
    projection (the last band layer of a prefix); ``last_only`` computes the output of the last token
    only (the exit layer, where nothing else is read). Attention runs through SDPA; ``want_probs``
    takes the eager path instead, the only one that materializes the probabilities.
    """
    layer = decoder_layer(layer)
    attn = layer.self_attn
    batch, tokens, _ = x.shape
    shape = (batch, tokens, -1, attn.head_dim)
    h = layer.input_layernorm(x)
    k = attn.k_norm(attn.k_proj(h).view(shape)).transpose(1, 2)  # [batch, kv_heads, tokens, head_dim]
    v = attn.v_proj(h).view(shape).transpose(1, 2)  # [batch, kv_heads, tokens, head_dim]
    if kv_only:
        return None, _rope(k, cos, sin), v, None
    residual = x
    if last_only:  # only the last token's query is read: project it alone
        h, cos_q, sin_q, residual = h[:, -1:], cos[:, -1:], sin[:, -1:], x[:, -1:]
        mask = mask[:, :, -1:] if mask is not None else None  # None: the last token reads every key
    else:
        cos_q, sin_q = cos, sin
    q = attn.q_proj(h).view(batch, h.shape[1], -1, attn.head_dim)  # [batch, queries, heads, head_dim]
    q = attn.q_norm(q).transpose(1, 2)  # [batch, heads, queries, head_dim]
    q, k = _rope(q, cos_q, sin_q), _rope(k, cos, sin)  # [batch, heads, queries, head_dim], keys as above
    keys, values = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
    probs = None
    if want_probs:
        out, probs = eager_attention(q, keys, values, mask, attn.scaling)
    else:
        out = attend(q, keys, values, mask, attn.scaling)
    out = out.transpose(1, 2).reshape(batch, q.shape[2], -1)  # [batch, queries, heads*dim]
    x = residual + attn.o_proj(out)
    x = x + layer.mlp(layer.post_attention_layernorm(x))
    return x, k, v, probs


def _self_mask(valid: torch.Tensor, padded: bool) -> Mask:
    """:func:`causal_mask`, or None (plain causal, fused kernels' favourite) when no row is padded."""
    return causal_mask(valid) if padded else None


def _padded(hidden: Sequence[torch.Tensor]) -> bool:
    """Whether left-padding these segments to one length pads any of them (known on the host: no sync)."""
    return len({h.shape[0] for h in hidden}) > 1


def _final_logit(backbone: Backbone, last: torch.Tensor) -> torch.Tensor:
    """logit(yes) - logit(no) from the last token's state [batch, hidden], in float32."""
    # Autocast would run this matmul in bfloat16, where close yes/no logits tie: the head stays float32.
    with torch.autocast(last.device.type, enabled=False):
        normed = backbone.norm(last).float()  # [batch, hidden]
        return normed @ backbone.score_vector().to(normed.device)  # [batch]


def _left_pad(states: list[SegmentStates], hidden: list[torch.Tensor] | None = None):
    """Stack segments left-padded so every last token sits at index -1.

    Returns hidden [batch, t, hidden], positions [3, batch, t], valid [batch, t] and, per DeepStack
    layer, a dense addend [batch, t, hidden] that is zero outside visual tokens.
    """
    hidden = hidden if hidden is not None else [s.hidden for s in states]
    t = max(h.shape[0] for h in hidden)
    batch, width = len(states), hidden[0].shape[-1]
    ref = hidden[0]
    x = ref.new_zeros(batch, t, width)
    positions = torch.zeros(3, batch, t, dtype=torch.long, device=ref.device)
    valid = torch.zeros(batch, t, dtype=torch.bool, device=ref.device)
    n_deepstack = max((len(s.deepstack) for s in states), default=0)
    deepstack = [ref.new_zeros(batch, t, width) for _ in range(n_deepstack)]
    for b, (s, h) in enumerate(zip(states, hidden)):
        pad = t - h.shape[0]
        x[b, pad:] = h
        positions[:, b, pad:] = s.positions
        valid[b, pad:] = True
        for k, feat in enumerate(s.deepstack):
            rows = torch.nonzero(s.visual).squeeze(-1) + pad
            deepstack[k][b, rows] = feat
    return x, positions, valid, deepstack


@dataclass
class JoinedPairs:
    """[prefix; suffix] sequences of a batch, left-padded, with the masks of the reference definition."""

    x: torch.Tensor  # [batch, t, hidden]
    positions: torch.Tensor  # [3, batch, t]
    valid: torch.Tensor  # [batch, t], False at left padding
    in_suffix: torch.Tensor  # [batch, t]
    deepstack: list[torch.Tensor]  # per DeepStack layer: [batch, t, hidden], zero outside visual tokens
    band_mask: torch.Tensor  # [batch, 1, t, t] bool (see Mask): causal (band layers)
    within_mask: torch.Tensor  # [batch, 1, t, t] bool: causal, suffix rows blind to prefix keys

    def layer_masks(self, band: tuple[int, int]) -> LayerMasks:
        """The mask of each layer under ``band``."""
        return LayerMasks(band, self.band_mask, self.within_mask)


def join_pairs(prefixes: list[SegmentStates], suffixes: list[SegmentStates]) -> JoinedPairs:
    """Concatenate each pair, left-pad the batch and build both per-layer masks."""
    joined = [
        SegmentStates(
            torch.cat([p.hidden, s.hidden]),
            torch.cat([p.positions, s.positions], 1),
            torch.cat([p.visual, s.visual]),
            [torch.cat([a, b]) for a, b in zip(p.deepstack, s.deepstack)] or (p.deepstack or s.deepstack),
            s.next_position,
        )
        for p, s in zip(prefixes, suffixes)
    ]
    x, positions, valid, deepstack = _left_pad(joined)
    batch, t, _ = x.shape
    in_suffix = torch.zeros(batch, t, dtype=torch.bool, device=x.device)  # [batch, t]
    for b, s in enumerate(suffixes):
        in_suffix[b, t - s.length :] = True
    causal = causal_mask(valid)  # [batch, 1, t, t]
    crossing = in_suffix[:, None, :, None] & ~in_suffix[:, None, None, :]  # suffix query, prefix key
    # a suffix row keeps its own keys, a padding row itself: neither mask has an empty row
    return JoinedPairs(x, positions, valid, in_suffix, deepstack, causal, causal & ~crossing)


# -- the layer loop -------------------------------------------------------------------------------------------

KV = tuple[torch.Tensor, torch.Tensor]  # keys, values: [batch, kv_heads, tokens, head_dim] each
#: Keys and values a layer reads in front of its own tokens: (layer index, layer, whether it is the loop's last
#: layer) -> KV, or None for none.
PastFn = Callable[[int, torch.nn.Module, bool], KV | None]
#: What the last layer of a loop computes: every token's output; only the last token's (an exit layer: nothing
#: else is read); only its keys and values (the last band layer of a prefix).
Finish = Literal["all", "last_token", "kv"]


@dataclass(frozen=True)
class LayerMasks:
    """The per-layer mask choice of the definition (``docs/design.md``, "The miniReranker computation"): in band
    layers [start, end) suffix tokens read the prefix (``in_band``); elsewhere each segment reads only itself."""

    band: tuple[int, int]
    in_band: Mask
    outside: Mask

    def at(self, layer_idx: int) -> Mask:
        return self.in_band if self.band[0] <= layer_idx < self.band[1] else self.outside


@dataclass
class LayerRun:
    """What :func:`run_layers` returns."""

    x: torch.Tensor  # [batch, t, hidden]; [batch, 1, hidden] after a "last_token" finish; unchanged by a "kv" one
    keys: list[torch.Tensor]  # per layer of keep_kv: [batch, kv_heads, past + t, head_dim]
    values: list[torch.Tensor]  # as keys


def run_layers(
    backbone: Backbone,
    x: torch.Tensor,  # [batch, t, hidden]
    cos: torch.Tensor,  # [batch, t, head_dim]
    sin: torch.Tensor,
    deepstack: Sequence[torch.Tensor],  # per DeepStack layer: [batch, t, hidden], zero outside visual tokens
    layers: range,
    masks: LayerMasks | Mask,
    *,
    past: PastFn | None = None,
    finish: Finish = "all",
    keep_kv: range = range(0),
    on_probs: Callable[[int, torch.Tensor], None] | None = None,
    before_layer: Callable[[int, torch.nn.Module, torch.Tensor], None] | None = None,
) -> LayerRun:
    """The one layer-loop body: decoder ``layers`` in order, each under its mask (:class:`LayerMasks` picks band or
    within-segment per layer; a plain :data:`Mask` serves every layer), reading the keys and values ``past`` puts in
    front of its own, then the DeepStack features added after the first layers.

    ``finish``: what the last layer computes (:data:`Finish`). ``keep_kv``: layers whose keys and values (past's in
    front) are returned. ``on_probs``: called with each layer's attention probabilities [batch, heads, t, past + t]
    (attention then runs eagerly, the only way that forms them). ``before_layer``: called with each layer's input.
    """
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    for layer_idx in layers:
        layer = backbone.layers[layer_idx]
        final = layer_idx == layers[-1]
        if before_layer is not None:
            before_layer(layer_idx, layer, x)
        front = past(layer_idx, layer, final) if past is not None else None
        mask = masks.at(layer_idx) if isinstance(masks, LayerMasks) else masks
        last_only = final and finish == "last_token"
        out, k, v, probs = layer_forward(
            layer,
            x,
            cos,
            sin,
            mask,
            front,
            last_only=last_only,
            kv_only=final and finish == "kv",
            want_probs=on_probs is not None,
        )
        if layer_idx in keep_kv:
            keys.append(k if front is None else torch.cat([front[0], k], 2))  # [batch, kv_heads, past + t, head_dim]
            values.append(v if front is None else torch.cat([front[1], v], 2))
        if on_probs is not None:
            on_probs(layer_idx, probs)  # type: ignore[arg-type]
        if out is None:  # keys and values only: the output is never read
            break
        x = out
        # DeepStack: vision-encoder features join the visual tokens after the first layers (`docs/design.md`,
        # "Reference semantics: the dense Qwen3-VL-Reranker"); after an exit layer only the last token is left,
        # and it is never visual.
        if layer_idx < len(deepstack) and not last_only:
            x = x + deepstack[layer_idx]
    return LayerRun(x, keys, values)


class _SharedStart:
    """Text tokens that begin every row of a batch (the system prompt), a :data:`PastFn`: each layer runs them once,
    at batch size 1, and every row reads their keys and values."""

    def __init__(self, backbone: Backbone, shared: SegmentStates, batch: int) -> None:
        self.backbone, self.batch, self.length = backbone, batch, shared.length
        self.x = shared.hidden[None]  # [1, k, hidden]
        self.cos, self.sin = rotary(backbone, self.x, shared.positions[:, None])

    def __call__(self, layer_idx: int, layer: torch.nn.Module, final: bool) -> KV:
        """Run layer ``layer_idx`` on the shared tokens (keys and values only in the loop's last layer); return
        their keys and values expanded to the batch, [batch, kv_heads, k, head_dim] each."""
        one = range(layer_idx, layer_idx + 1)
        run = run_layers(
            self.backbone, self.x, self.cos, self.sin, [], one, None, finish="kv" if final else "all", keep_kv=one
        )
        self.x = run.x  # plainly causal, text only: no mask, no DeepStack
        return run.keys[0].expand(self.batch, -1, -1, -1), run.values[0].expand(self.batch, -1, -1, -1)


def reference_logits(
    backbone: Backbone,
    prefixes: list[SegmentStates],
    suffixes: list[SegmentStates],
    band: tuple[int, int],
    exit_layer: int,
    shared: SegmentStates | None = None,
) -> torch.Tensor:
    """The naive definition, batched: each [prefix; suffix] through layers 0..exit-1, where suffix tokens
    see prefix tokens only in band layers. ``suffix`` positions must already follow their prefix's.
    Returns logit(yes) - logit(no) [batch] in float32; differentiable (training uses it too).

    ``shared``: text tokens that begin every prefix (the system prompt), cut from ``prefixes``: they run
    once for the batch and are attended like the rest of the prefix. Same numbers, less work: training
    uses it to skip the ~60% of each prompt that never changes.
    """
    pairs = join_pairs(prefixes, suffixes)
    x, in_suffix = pairs.x, pairs.in_suffix
    batch, t, _ = x.shape
    masks = pairs.layer_masks(band)
    start = _SharedStart(backbone, shared, batch) if shared is not None else None
    if start is not None:  # every token sees the shared start, except suffix tokens outside the band
        k = start.length
        seen_from_outside = (~in_suffix)[:, None, :, None].expand(batch, 1, t, k)  # [batch, 1, t, k]
        masks = LayerMasks(
            band,
            torch.cat([pairs.band_mask.new_ones(batch, 1, t, k), pairs.band_mask], dim=-1),  # [batch, 1, t, k + t]
            torch.cat([seen_from_outside, pairs.within_mask], dim=-1),  # [batch, 1, t, k + t]
        )
    cos, sin = rotary(backbone, x, pairs.positions)
    run = run_layers(backbone, x, cos, sin, pairs.deepstack, range(exit_layer), masks, past=start, finish="last_token")
    return _final_logit(backbone, run.x[:, -1])


def single_segment_logits(backbone: Backbone, states: list[SegmentStates], exit_layer: int) -> torch.Tensor:
    """Whole prompts (query-first), batched with left padding: causal attention, early exit. [batch] logits."""
    x, positions, valid, deepstack = _left_pad(states)
    cos, sin = rotary(backbone, x, positions)
    mask = _self_mask(valid, _padded([s.hidden for s in states]))
    run = run_layers(backbone, x, cos, sin, deepstack, range(exit_layer), mask, finish="last_token")
    return _final_logit(backbone, run.x[:, -1])


def compute_prefix(backbone: Backbone, prefix: SegmentStates, band: tuple[int, int]) -> PrefixEntry:
    """Run a prefix alone up to the band end and keep its band-layer keys and values.

    The prefix never attends to the suffix, so this depends on the prefix alone. Layers below the band
    start are run only to reach it; the last band layer stops after its key/value projection.
    """
    return compute_prefixes(backbone, [prefix], band)[0]


def compute_prefixes(
    backbone: Backbone, prefixes: list[SegmentStates], band: tuple[int, int], shared: SegmentStates | None = None
) -> list[PrefixEntry]:
    """:func:`compute_prefix` of several prefixes in one left-padded batch; differentiable (fast-path training).

    ``shared``: text tokens that begin every prefix, cut from ``prefixes`` (as in :func:`reference_logits`):
    run once, their keys and values lead each returned entry.
    """
    start, end = band
    end = end if end > start else 0  # an empty band reads nothing from the prefix: run no layer
    x, positions, valid, deepstack = _left_pad(prefixes)
    batch, t, _ = x.shape
    cos, sin = rotary(backbone, x, positions)
    mask = _self_mask(valid, _padded([p.hidden for p in prefixes]))
    head_start = _SharedStart(backbone, shared, batch) if shared is not None else None
    if head_start is not None:  # every row reads the shared start, then its own causal part
        own = mask if mask is not None else causal_mask(valid)  # [batch, 1, t, t]
        mask = torch.cat([own.new_ones(batch, 1, t, head_start.length), own], dim=-1)  # [batch, 1, t, k + t]
    run = run_layers(
        backbone, x, cos, sin, deepstack, range(end), mask, past=head_start, finish="kv", keep_kv=range(start, end)
    )
    attn = decoder_layer(backbone.layers[0]).self_attn
    kv_heads, head_dim = attn.config.num_key_value_heads, attn.head_dim
    head = shared.length if shared is not None else 0
    entries = []
    for b, prefix in enumerate(prefixes):  # each row's shared start and its own tokens, left padding dropped
        rows = torch.cat([torch.arange(head), torch.arange(head + t - prefix.length, head + t)]).to(x.device)
        length = head + prefix.length
        empty = x.new_zeros(0, kv_heads, length, head_dim)
        entries.append(
            PrefixEntry(
                keys=torch.stack([k[b][:, rows] for k in run.keys]) if run.keys else empty,  # [band, kv, len, dim]
                values=torch.stack([v[b][:, rows] for v in run.values]) if run.values else empty,
                length=length,
                next_position=prefix.next_position,
            )
        )
    return entries


def compute_suffix_preband(backbone: Backbone, suffix: SegmentStates, band_start: int) -> torch.Tensor:
    """Hidden states [s, hidden] of a suffix after the layers below the band, where it sees only itself.

    RoPE is relative, so the suffix's own positions (from 0) give the same states wherever it is
    placed: computed once per distinct suffix and shared by every prefix it is paired with.
    """
    x, positions, _, deepstack = _left_pad([suffix])  # one row, no padding: [1, s, hidden]
    cos, sin = rotary(backbone, x, positions)
    return run_layers(backbone, x, cos, sin, deepstack, range(band_start), None).x[0]  # plainly causal


def gather_prefix_kv(
    entries: list[PrefixEntry], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The band-layer keys and values of a batch of entries, right-padded to the longest, on ``device``:
    [band layers, batch, kv_heads, longest, head_dim] each, gathered straight into one buffer per tensor
    (pinned for CUDA) and moved once; int8 entries dequantized there (:func:`..store.window.gather_window`)."""
    return gather_window(entries, device, dtype)


def pair_logits(
    backbone: Backbone,
    entries: list[PrefixEntry],
    suffixes: list[SegmentStates],  # positions already shifted by each entry's next_position
    prebands: list[torch.Tensor],  # compute_suffix_preband() of each suffix
    band: tuple[int, int],
    exit_layer: int,
) -> torch.Tensor:
    """The per-pair work: suffix tokens through layers band start..exit-1, batched across pairs of
    different lengths, reading each pair's cached prefix keys/values in band layers. Returns [batch] logits."""
    start, end = band
    x, positions, valid, deepstack = _left_pad(suffixes, prebands)
    batch, t, _ = x.shape
    cos, sin = rotary(backbone, x, positions)
    self_mask = _self_mask(valid, _padded(prebands))  # [batch, 1, t, t] or None
    band_mask: Mask = None
    if end > start:
        past_k, past_v = gather_prefix_kv(entries, x.device, x.dtype)  # [band layers, batch, kv_heads, p, dim]
        p = past_k.shape[3]
        lengths = torch.tensor([e.length for e in entries])  # host side: no device sync
        prefix_valid = (torch.arange(p)[None] < lengths[:, None]).to(x.device, non_blocking=True)  # [batch, p]
        own = self_mask if self_mask is not None else causal_mask(valid)
        band_mask = torch.cat([prefix_valid[:, None, None, :].expand(batch, 1, t, p), own], -1)  # [batch, 1, t, p + t]

    def cached(layer_idx: int, _layer: torch.nn.Module, _final: bool) -> KV | None:
        return (past_k[layer_idx - start], past_v[layer_idx - start]) if layer_idx < end else None

    masks = LayerMasks(band, band_mask, self_mask)
    run = run_layers(
        backbone, x, cos, sin, deepstack, range(start, exit_layer), masks, past=cached, finish="last_token"
    )
    return _final_logit(backbone, run.x[:, -1])


def last_token_attention(backbone: Backbone, states: SegmentStates, layers: int | None = None) -> torch.Tensor:
    """Attention probabilities from the last token to every token, per layer and head:
    [layers, heads, tokens]. Used by embedder-guided pruning."""
    return last_token_attention_batch(backbone, [states], layers)[0]


def last_token_attention_batch(
    backbone: Backbone, states: list[SegmentStates], layers: int | None = None
) -> list[torch.Tensor]:
    """:func:`last_token_attention` of several segments in one left-padded batch (padding gets exactly 0).

    ``layers``: only the first ``layers`` layers run (None: all). Every layer attends through SDPA; only the
    last token's row of probabilities is formed (eagerly, the same math), since nothing else is read.
    """
    x, positions, valid, deepstack = _left_pad(states)
    cos, sin = rotary(backbone, x, positions)
    mask = _self_mask(valid, _padded([s.hidden for s in states]))
    last_row = mask[:, :, -1:] if mask is not None else None  # the last token reads every real token
    depth = len(backbone.layers) if layers is None else min(layers, len(backbone.layers))
    rows: list[torch.Tensor] = []  # per layer: [batch, heads, t]

    def probe(_layer_idx: int, layer: torch.nn.Module, layer_input: torch.Tensor) -> None:
        rows.append(last_row_probs(layer, layer_input, cos, sin, last_row))

    x = run_layers(backbone, x, cos, sin, deepstack, range(depth - 1), mask, before_layer=probe).x
    probe(depth - 1, backbone.layers[depth - 1], x)  # the last layer's output is never read: not run
    stacked = torch.stack(rows, 1)  # [batch, layers, heads, t]
    t = x.shape[1]
    return [stacked[b, :, :, t - s.length :] for b, s in enumerate(states)]


def last_row_probs(
    layer: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Mask
) -> torch.Tensor:
    """The last token's attention probabilities [batch, heads, t] in one layer (the eager formula, one row).

    x [batch, t, hidden]; cos, sin [batch, t, head_dim]; ``mask`` the last row's, [batch, 1, 1, t], or None.
    """
    layer = decoder_layer(layer)
    attn = layer.self_attn
    batch, tokens, _ = x.shape
    shape = (batch, tokens, -1, attn.head_dim)
    h = layer.input_layernorm(x)
    k = attn.k_norm(attn.k_proj(h).view(shape)).transpose(1, 2)  # [batch, kv_heads, t, head_dim]
    q = attn.q_norm(attn.q_proj(h[:, -1:]).view(batch, 1, -1, attn.head_dim)).transpose(1, 2)  # [batch, heads, 1, d]
    q = _rope(q, cos[:, -1:], sin[:, -1:])  # the last position's rotation
    k = _rope(k, cos, sin)
    kv_heads = k.shape[1]
    group = q.shape[1] // kv_heads
    grouped = q[:, :, 0].view(batch, kv_heads, group, -1)  # [batch, kv_heads, group, head_dim]: head h reads h // group
    scores = torch.einsum("bkgd,bktd->bkgt", grouped, k) * attn.scaling  # [batch, kv_heads, group, t]
    scores = scores.reshape(batch, -1, tokens)  # [batch, heads, t]
    return F.softmax(masked_scores(scores.float(), mask[:, 0] if mask is not None else None), dim=-1)
