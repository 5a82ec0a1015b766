"""DETR's encoder-decoder transformer.

torch.nn.Transformer with three changes, as in the official implementation: the positional encodings are
added to the queries and keys (never the values) of every attention layer, the encoder has no final
LayerNorm, and the decoder returns every layer's output through its shared final norm (for the auxiliary
losses). Post-norm layers, ReLU feed-forward blocks. Module names follow the official checkpoints.
Attention runs through a fused kernel by default (see attention.py), with its own dropout on the weights.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr.attention import MultiheadAttention


class Transformer(nn.Module):
    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        fused_attention: bool = True,
    ):
        super().__init__()
        encoder_layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, attention_dropout, fused_attention
        )
        self.encoder = TransformerEncoder(encoder_layer, num_encoder_layers)
        decoder_layer = TransformerDecoderLayer(
            d_model, nhead, dim_feedforward, dropout, attention_dropout, fused_attention
        )
        self.decoder = TransformerDecoder(decoder_layer, num_decoder_layers, nn.LayerNorm(d_model))
        self._reset_parameters()
        self.d_model = d_model
        self.nhead = nhead

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, mask: Tensor, query_embed: Tensor, pos_embed: Tensor) -> Tensor:
        """src [B, C, H, W], mask [B, H, W], query_embed [Q, C], pos_embed [B, C, H, W] → [layers, B, Q, C]."""
        bs = src.shape[0]
        # The attention layers are sequence-first: [H*W, B, C].
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        query_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)
        mask = mask.flatten(1)

        tgt = torch.zeros_like(query_embed)
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        hs = self.decoder(tgt, memory, memory_key_padding_mask=mask, pos=pos_embed, query_pos=query_embed)
        return hs.transpose(1, 2)


class TransformerEncoder(nn.Module):
    def __init__(self, encoder_layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, pos: Tensor) -> Tensor:
        output = src
        for layer in self.layers:
            output = layer(output, src_key_padding_mask=src_key_padding_mask, pos=pos)
        return output


class TransformerDecoder(nn.Module):
    def __init__(self, decoder_layer: nn.Module, num_layers: int, norm: nn.Module):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        """Every layer's output after the shared final norm, stacked: [layers, Q, B, C]."""
        output = tgt
        intermediate = []
        for layer in self.layers:
            output = layer(
                output, memory, memory_key_padding_mask=memory_key_padding_mask, pos=pos, query_pos=query_pos
            )
            intermediate.append(self.norm(output))
        return torch.stack(intermediate)


class TransformerEncoderLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        fused_attention: bool = True,
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, attention_dropout, fused_attention)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, pos: Tensor) -> Tensor:
        q = k = src + pos
        src2 = self.self_attn(q, k, value=src, key_padding_mask=src_key_padding_mask)[0]
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(src2))


class TransformerDecoderLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        fused_attention: bool = True,
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, attention_dropout, fused_attention)
        self.multihead_attn = MultiheadAttention(d_model, nhead, attention_dropout, fused_attention)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        q = k = tgt + query_pos
        tgt2 = self.self_attn(q, k, value=tgt)[0]
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        tgt2 = self.multihead_attn(
            query=tgt + query_pos, key=memory + pos, value=memory, key_padding_mask=memory_key_padding_mask
        )[0]
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    # Deep copies, as the official code: every layer starts from the same biases, so a given seed
    # initialises this model exactly as it initialises the official one.
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))
