"""How one decoder layer attends: boolean masks, the SDPA call (grouped-query heads without repeated keys and
values), and the eager math it replaces, kept as the readable reference (``docs/design.md``, "Attention masks").
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers.models.qwen3_vl.modeling_qwen3_vl import repeat_kv

# Masks are boolean, [batch, 1, queries, keys], True where a query may read a key: one byte per entry, built once
# per call, and never a value that turns into -inf in a narrower dtype (float32's min is -inf in bfloat16).
# ``None`` means plainly causal over an unpadded batch (SDPA's ``is_causal``; no mask at all for one query).
# No row is ever fully masked: a left-padding row reads itself. Fused CUDA kernels may return NaN for a row with
# no key, and that NaN reaches every row of the batch at the next layer (0 x NaN) (`docs/design.md`, "Attention
# masks").
Mask = torch.Tensor | None

NEG = torch.finfo(torch.float32).min  # masked score in the eager float32 softmax; finite there


def _sdpa_has_gqa() -> bool:
    try:
        return "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # a builtin without a readable signature: probe it
        try:
            q = torch.zeros(1, 2, 1, 1)
            F.scaled_dot_product_attention(q, q[:, :1], q[:, :1], enable_gqa=True)
            return True
        except TypeError:
            return False


_HAS_GQA = _sdpa_has_gqa()

#: How grouped-query attention with a mask reaches SDPA without repeating keys/values per head: ``"fold"`` folds
#: each query group into the query axis, [batch, kv_heads, group * queries, head_dim], which every SDPA kernel
#: accepts; ``"native"`` passes ``enable_gqa=True`` (torch >= 2.5). On CUDA, flash attention takes grouped heads
#: but no mask, and the memory-efficient kernel takes a mask but not grouped heads
#: (``check_batch_size_and_num_heads_dense<false>`` in torch's ``cuda/sdp_utils.cpp``): a masked ``enable_gqa``
#: call can leave only the math kernel, the fold keeps the memory-efficient one. Unmasked causal calls pass
#: ``enable_gqa`` with ``is_causal`` where torch has it (flash takes both). Both modes equal the eager math.
GQA_MODE: str = "fold"


def sdpa_arguments(q: torch.Tensor, keys: torch.Tensor, mask: Mask) -> tuple[torch.Tensor, dict]:
    """The query and keyword arguments :func:`attend` hands ``scaled_dot_product_attention`` (besides keys, values
    and scale): public so a device check can ask torch which kernel serves this project's masks.

    q [batch, heads, queries, dim]; keys [batch, kv_heads, keys, dim]; ``mask`` as :data:`Mask` (an additive float
    mask is accepted too, clamped to the query dtype's finite range).
    """
    batch, heads, queries, dim = q.shape
    kv_heads, n_keys = keys.shape[1], keys.shape[2]
    if mask is not None and mask.dtype != torch.bool:  # additive: keep it finite in the dtype it is used in
        mask = mask.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
    causal = mask is None and queries > 1  # one query reading every key needs no mask at all
    if causal and queries != n_keys:
        raise ValueError(f"an implicit causal mask needs as many keys as queries, got {queries} and {n_keys}")
    if heads == kv_heads:
        return q, {"attn_mask": mask, "is_causal": causal}
    if causal and _HAS_GQA:
        return q, {"is_causal": True, "enable_gqa": True}
    if causal:  # the fold breaks SDPA's notion of causal order: spell the mask out
        mask = torch.ones(1, 1, queries, n_keys, dtype=torch.bool, device=q.device).tril()
    if GQA_MODE == "native" and _HAS_GQA:
        return q, {"attn_mask": mask, "enable_gqa": True}
    group = heads // kv_heads  # head h reads kv head h // group (as repeat_kv lays them out)
    folded = q.reshape(batch, kv_heads, group * queries, dim)  # [batch, kv_heads, group * queries, dim]
    return folded, {"attn_mask": _folded_mask(mask, group) if mask is not None else None}


_last_fold: tuple[torch.Tensor, int, torch.Tensor] | None = None  # (mask, group, folded): reused across layers


def _folded_mask(mask: torch.Tensor, group: int) -> torch.Tensor:
    """``mask`` [rows, 1, queries, keys] repeated per query group: [rows, 1, group * queries, keys] (a view when
    there is one query). Every layer of a call passes the same mask: it is folded once, not once per layer."""
    global _last_fold
    last = _last_fold
    if last is not None and last[0] is mask and last[1] == group:
        return last[2]
    rows, _, queries, n_keys = mask.shape
    folded = mask[:, :, None].expand(rows, 1, group, queries, n_keys)  # [rows, 1, group, queries, keys]
    folded = folded.reshape(rows, 1, group * queries, n_keys)  # [rows, 1, group * queries, keys]
    _last_fold = (mask, group, folded)  # holds the mask, so its identity cannot be reused while cached
    return folded


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Mask, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale, masked) v through ``scaled_dot_product_attention``, keys/values never repeated.

    q [batch, heads, queries, dim]; keys, values [batch, kv_heads, keys, dim]; ``mask`` as :data:`Mask`.
    Returns [batch, heads, queries, dim].
    """
    query, kwargs = sdpa_arguments(q, keys, mask)
    # looked up at call time, so a test can stand in a kernel that returns NaN for fully masked rows
    out = F.scaled_dot_product_attention(query, keys, values, scale=scale, **kwargs)
    return out.reshape(q.shape)  # [batch, heads, queries, dim]: a folded query axis unfolded


def masked_scores(scores: torch.Tensor, mask: Mask) -> torch.Tensor:
    """float32 ``scores`` with masked entries at :data:`NEG` (an additive float mask is added instead)."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, NEG)
    return scores + mask.float()


def eager_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Mask, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stock eager attention: (output [batch, heads, queries, dim], probabilities [batch, heads, queries, keys])."""
    n_rep = q.shape[1] // keys.shape[1]
    keys, values = repeat_kv(keys, n_rep), repeat_kv(values, n_rep)  # [batch, heads, keys, head_dim]
    scores = torch.matmul(q, keys.transpose(2, 3)) * scale  # [batch, heads, queries, keys]
    if mask is None:  # causal, keys aligned with the queries' end (the last query reads every key)
        queries, n_keys = scores.shape[-2:]
        mask = torch.ones(queries, n_keys, dtype=torch.bool, device=q.device).tril(n_keys - queries)
    probs = F.softmax(masked_scores(scores.float(), mask), dim=-1).to(q.dtype)
    return torch.matmul(probs, values), probs


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """Causal mask [batch, 1, t, t] over left-padded rows (``valid`` [batch, t] bool): a real token reads the real
    tokens up to itself; a padding row reads itself only, so no row is empty."""
    t = valid.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()  # [t, t]
    diagonal = torch.eye(t, dtype=torch.bool, device=valid.device)
    return ((causal[None] & valid[:, None, :]) | diagonal)[:, None]
