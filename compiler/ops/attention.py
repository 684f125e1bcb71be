"""Transformer ops of opsets 23-25: Attention and RotaryEmbedding.

Attention is scaled dot-product attention over heads, in ONNX's order of steps: Q and K
each scaled by ``sqrt(scale)``, their product, the soft cap, the bias (the mask, the causal
frontier, the padding of an external cache, the sliding window), the softmax (in
``softmax_precision``), the product with V. A query whose keys are all masked gives a row of
zeros. Q, K and V are 4-D ``(batch, heads, sequence, head size)`` or 3-D
``(batch, sequence, heads * head size)`` with the head counts as attributes; K and V may have
fewer heads than Q (grouped queries), each shared by a block of query heads.
"""

from __future__ import annotations

import math

import torch
from anacc.compiler.ops._common import optional, torch_dtype
from anacc.compiler.ops.base import Inputs, OpCall, OpDef


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """A 3-D ``(B, S, H*D)`` tensor as 4-D ``(B, H, S, D)``; 4-D ones pass unchanged."""
    if t.dim() == 4:
        return t
    b, s, hidden = t.shape
    return t.reshape(b, s, heads, hidden // heads).transpose(1, 2)


def _allowed(
    call: OpCall, q_len: int, kv_len: int, past: int, nonpad: torch.Tensor | None
) -> torch.Tensor | None:
    """Which keys each query may see, ``(B or 1, 1, Sq, Skv)`` booleans, from the causal
    frontier, the external cache's valid length and the window; None if all of them."""
    rows = torch.arange(q_len)[:, None]
    cols = torch.arange(kv_len)[None, :]
    if nonpad is not None:
        offset = (nonpad.to(torch.int64) - q_len).reshape(-1, 1, 1, 1)
    else:
        offset = torch.tensor(past).reshape(1, 1, 1, 1)
    position = rows + offset  # the absolute position of each query
    allowed = None

    def both(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        return b if a is None else a & b

    if call.attr("is_causal", 0):
        allowed = both(allowed, cols <= position)
    left, right = int(call.attr("left_window_size", -1)), int(call.attr("right_window_size", -1))
    if left >= 0:
        allowed = both(allowed, cols >= position - left)
    if right >= 0:
        allowed = both(allowed, cols <= position + right)
    if nonpad is not None:
        allowed = both(allowed, cols < nonpad.to(torch.int64).reshape(-1, 1, 1, 1))
    return allowed


def _attention(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    q, k, v = inputs[0], inputs[1], inputs[2]
    mask, past_k, past_v = optional(inputs, 3), optional(inputs, 4), optional(inputs, 5)
    nonpad = optional(inputs, 6)
    three_d = q.dim() == 3
    q = _heads(q, int(call.attr("q_num_heads", 0) or 1))
    k = _heads(k, int(call.attr("kv_num_heads", 0) or 1))
    v = _heads(v, int(call.attr("kv_num_heads", 0) or 1))
    past = 0
    if past_k is not None and past_v is not None:
        past = past_k.shape[2]
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    present_k, present_v = k, v
    if k.shape[1] != q.shape[1]:  # grouped queries share each key/value head
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scale = call.attr("scale")
    scale = float(scale) if scale is not None else 1 / math.sqrt(q.shape[-1])
    root = math.sqrt(scale)
    scores = (q * root) @ (k * root).transpose(-1, -2)
    qk = [scores]
    softcap = float(call.attr("softcap", 0.0))
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    qk.append(scores)
    q_len, kv_len = q.shape[2], k.shape[2]
    allowed = _allowed(call, q_len, kv_len, past, nonpad)
    if mask is not None:
        if mask.shape[-1] < kv_len:  # a mask shorter than an external cache: the rest is off
            fill = False if mask.dtype == torch.bool else float("-inf")
            extra = mask.new_full((*mask.shape[:-1], kv_len - mask.shape[-1]), fill)
            mask = torch.cat([mask, extra], dim=-1)
        if mask.dtype == torch.bool:
            allowed = mask if allowed is None else allowed & mask
        else:
            scores = scores + mask.to(scores.dtype)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    qk.append(scores)
    precision = call.attr("softmax_precision")
    wide = torch_dtype(precision) if precision is not None else scores.dtype
    weights = torch.softmax(scores.to(wide), dim=-1)
    blocked = torch.isneginf(scores).all(dim=-1, keepdim=True)
    weights = torch.where(blocked, torch.zeros_like(weights), weights).to(scores.dtype)
    qk.append(weights)
    y = weights @ v
    if three_d:
        y = y.transpose(1, 2).reshape(y.shape[0], q_len, -1)
    mode = int(call.attr("qk_matmul_output_mode", 0))
    return [y, present_k, present_v, qk[mode]][: max(1, len(call.node.outputs))]


def _rotary_embedding(call: OpCall, inputs: Inputs) -> list[torch.Tensor]:
    """Rotate pairs of features by the cached angles of each token's position: the two
    halves of the rotated features pair up, or neighbours with ``interleaved``."""
    x, cos, sin, positions = inputs[0], inputs[1], inputs[2], optional(inputs, 3)
    shape = x.shape
    if x.dim() == 4:  # (B, H, S, D) -> (B, S, H, D)
        x = x.transpose(1, 2)
    else:
        b, s, hidden = x.shape
        heads = int(call.attr("num_heads"))
        x = x.reshape(b, s, heads, hidden // heads)
    if positions is not None:
        cos, sin = cos[positions.to(torch.int64)], sin[positions.to(torch.int64)]
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    dim = int(call.attr("rotary_embedding_dim", 0)) or x.shape[-1]
    rotated, kept = x[..., :dim], x[..., dim:]
    if call.attr("interleaved", 0):
        first, second = rotated[..., 0::2], rotated[..., 1::2]
    else:
        first, second = rotated.chunk(2, dim=-1)
    real = cos * first - sin * second
    imag = sin * first + cos * second
    if call.attr("interleaved", 0):
        rotated = torch.stack([real, imag], dim=-1).reshape(rotated.shape)
    else:
        rotated = torch.cat([real, imag], dim=-1)
    y = torch.cat([rotated, kept], dim=-1)
    return [y.transpose(1, 2) if len(shape) == 4 else y.reshape(shape)]


OPS: list[OpDef] = [
    OpDef("Attention", torch=_attention),
    OpDef("RotaryEmbedding", torch=_rotary_embedding),
]
