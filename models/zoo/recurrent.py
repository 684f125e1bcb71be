"""Recurrent classifiers of the test family: ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` heads.

Each reads a (time, features) sequence batch first and classifies from the last time step,
taken by indexing ``out[:, -1]`` (a Gather or Slice in the exported graph).
"""

from __future__ import annotations

import torch
from torch import nn

RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RecurrentClassifier(nn.Module):
    """A batch-first recurrent layer stack and a Linear head on its last time step."""

    def __init__(
        self,
        kind: str,
        num_features: int = 13,
        hidden_size: int = 32,
        num_layers: int = 1,
        bidirectional: bool = False,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.recurrent = RECURRENT[kind](
            num_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
        )
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.recurrent(x)
        return self.head(out[:, -1])
