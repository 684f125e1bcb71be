"""Attention models of the test family: a hand-written tiny ViT and ``nn.TransformerEncoder``.

Both are small (well under a million parameters) so that they compile and export in seconds.
The ViT spells out every step (patch convolution, class token, position embedding, q/k/v
projections, scaled dot product through MatMul and Softmax, GELU MLP) so that the exported graph
shows the ops a real ViT export shows; the encoder uses torch's own layer to get torch's own
export of it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .weights import normal_

# Embeddings a trained ViT learns are of order 0.1 against patch features of order 1.
EMBEDDING_STD = 0.1


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q, k, v projections and an output projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        assert dim % num_heads == 0, (dim, num_heads)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, dim) -> (batch, heads, tokens, head_dim)."""
        batch, tokens, _ = x.shape
        return x.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(mixed.transpose(1, 2).flatten(2))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """ViT: patch embedding, class token, learned position embedding, encoder blocks, head."""

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 8,
        in_channels: int = 3,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_dim: int = 128,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        assert image_size % patch_size == 0, (image_size, patch_size)
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*(EncoderBlock(dim, num_heads, mlp_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def init_parameters(self, generator: torch.Generator) -> None:
        normal_(self.class_token, 0.0, EMBEDDING_STD, generator)
        normal_(self.position, 0.0, EMBEDDING_STD, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        class_token = self.class_token.expand(patches.shape[0], -1, -1)
        tokens = torch.cat([class_token, patches], dim=1) + self.position
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens[:, 0])


class EncoderClassifier(nn.Module):
    """``nn.TransformerEncoder`` over a (tokens, d_model) sequence, mean pooled, Linear head."""

    def __init__(
        self,
        d_model: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        feedforward: int = 64,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, feedforward, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))
