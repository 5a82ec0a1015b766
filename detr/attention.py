"""Multi-head attention with nn.MultiheadAttention's parameters, computed by a fused kernel.

nn.MultiheadAttention, as DETR calls it (returning the attention weights), materialises the
[batch·heads, queries, keys] softmax: with ~1,800 encoder tokens at 1333×1333 that matrix is most of
DETR's activation memory. `MultiheadAttention` keeps the parameters and their names (`in_proj_weight`,
`in_proj_bias`, `out_proj.*`), so the official checkpoints load unchanged, and routes the product through
F.scaled_dot_product_attention, whose flash / memory-efficient kernels never hold the whole matrix.
`fused=False` runs nn.MultiheadAttention's own explicit path instead: the reference for numerics, and the
one that returns attention maps (head-averaged, as the official visualisation hooks read them).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MultiheadAttention(nn.MultiheadAttention):
    """Sequence-first ([L, B, E]) attention; `key_padding_mask` [B, S] is True at padding, as in PyTorch."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, fused: bool = True):
        super().__init__(embed_dim, num_heads, dropout=dropout)
        self.fused = fused

    def forward(  # type: ignore[override]  # DETR passes only these; need_weights etc. are not offered
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(output [L, B, E], head-averaged weights [B, L, S] on the reference path, None on the fused one)."""
        if not self.fused:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask)
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q, k, v = self._heads(query, w_q, b_q), self._heads(key, w_k, b_k), self._heads(value, w_v, b_v)
        # SDPA's boolean masks mark what may be attended: the opposite of key_padding_mask.
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        length, batch = query.shape[:2]
        out = out.permute(2, 0, 1, 3).reshape(length, batch, self.embed_dim)
        return self.out_proj(out), None

    def _heads(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """[L, B, E] → projected [B, heads, L, head_dim]."""
        length, batch = x.shape[:2]
        x = F.linear(x, weight, bias).view(length, batch, self.num_heads, self.head_dim)
        return x.permute(1, 2, 0, 3)
