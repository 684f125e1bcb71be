"""Audio models: the M5 raw-waveform CNN and a keyword-spotting MLP on MFCC features.

``m5``: Dai et al. 2017, "Very Deep Convolutional Neural Networks for Raw Waveforms", the
five-layer M5 network: conv 80/4 (128), then 3-wide convs of 128, 256, 512 channels, each conv
followed by BatchNorm, ReLU and a max pool of 4, global average pooling over time, Linear to the
classes (10 for UrbanSound8k). The paper feeds 4 s at 8 kHz; any length from about 1500 samples
works (the zoo uses 8000, 1 s). 0.56 M parameters (the paper rounds to 0.5 M).

``kws_mlp``: the fully connected keyword-spotting baseline of Zhang et al. 2017, "Hello Edge:
Keyword Spotting on Microcontrollers" (DNN-S: three hidden layers of 144), with BatchNorm
before each ReLU, on 49 frames x 10 MFCCs (40 ms windows, 20 ms stride over 1 s), 12 classes.
The paper's DNN-S reads 25 frames and has 80 K parameters; on 49 frames the first layer grows
and the model has 0.11 M.
"""

from __future__ import annotations

import torch
from torch import nn

M5_CHANNELS = (128, 128, 256, 512)
M5_FIRST_KERNEL = 80
M5_FIRST_STRIDE = 4
M5_KERNEL = 3
M5_POOL = 4


class M5(nn.Module):
    """M5 on a (1, samples) waveform."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for index, channels in enumerate(M5_CHANNELS):
            first = index == 0
            layers += [
                nn.Conv1d(
                    in_channels,
                    channels,
                    M5_FIRST_KERNEL if first else M5_KERNEL,
                    stride=M5_FIRST_STRIDE if first else 1,
                    padding=0 if first else M5_KERNEL // 2,
                ),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
                nn.MaxPool1d(M5_POOL),
            ]
            in_channels = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=-1))


def kws_mlp(
    frames: int = 49,
    coefficients: int = 10,
    hidden: int = 144,
    num_hidden: int = 3,
    num_classes: int = 12,
) -> nn.Module:
    """Flatten (frames, coefficients), ``num_hidden`` x (Linear, BatchNorm1d, ReLU), Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = frames * coefficients
    for _ in range(num_hidden):
        layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
