"""The zoo's entries: one `ZooEntry` per model name, in the ordered mapping `ZOO`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .attention import EncoderClassifier, TinyViT
from .audio import M5, kws_mlp
from .densenet import densenet121
from .efficientnet import efficientnet_b0
from .googlenet import googlenet
from .mobilenet_v2 import mobilenet_v2
from .recurrent import RecurrentClassifier
from .regnet import regnet_x_400mf
from .resnet import resnet18
from .small_cnn import convnext_block, fixed_batch_cnn, mobilenetv3_block, shufflenet_split
from .squeezenet import squeezenet1_1
from .weights import initialize

FAMILIES = ("test", "arch")
IMAGE = (3, 224, 224)
SMALL_IMAGE = (3, 32, 32)
SEQUENCE = (20, 13)


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo.

    ``architecture`` constructs the network (its weights not yet drawn); `build` returns it in
    eval mode with every weight drawn from a seed. ``input_shape`` is per sample (no batch
    axis). ``fixed_batch`` is the batch the model is meant to be exported with, None for a
    dynamic batch axis. ``family`` is "test" (small models for compile tests) or "arch" (real
    architectures for benchmarks).
    """

    name: str
    architecture: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    family: str
    description: str
    input_dtype: np.dtype = np.dtype(np.float32)
    fixed_batch: int | None = None

    def __post_init__(self) -> None:
        assert self.family in FAMILIES, self.family

    def build(self, seed: int = 0, input_shape: tuple[int, ...] | None = None) -> nn.Module:
        """The model in eval mode, every weight drawn from a generator seeded with ``seed``.

        ``input_shape`` (default: the entry's) is the per-sample shape of the batch that
        measures the BatchNorm statistics; pass the shape the model will see if it differs.
        """
        generator = torch.Generator().manual_seed(seed)
        shape = self.input_shape if input_shape is None else input_shape
        return initialize(self.architecture(), shape, generator)


def _entries() -> list[ZooEntry]:
    return [
        ZooEntry(
            "vit_tiny",
            TinyViT,
            SMALL_IMAGE,
            "test",
            "ViT by hand: 8x8 patches of 32x32 RGB, class token, 2 blocks of dim 64, 4 heads",
        ),
        ZooEntry(
            "transformer_encoder",
            EncoderClassifier,
            (16, 32),
            "test",
            "nn.TransformerEncoder, 2 layers, d_model 32, 4 heads, mean pool, Linear head",
        ),
        ZooEntry(
            "lstm_classifier",
            lambda: RecurrentClassifier("lstm", num_layers=2, bidirectional=True),
            SEQUENCE,
            "test",
            "nn.LSTM, 2 layers of 32, bidirectional, last step out[:, -1], Linear head",
        ),
        ZooEntry(
            "gru_classifier",
            lambda: RecurrentClassifier("gru", hidden_size=48),
            SEQUENCE,
            "test",
            "nn.GRU, 1 layer of 48, last step out[:, -1], Linear head",
        ),
        ZooEntry(
            "rnn_classifier",
            lambda: RecurrentClassifier("rnn", num_layers=2),
            SEQUENCE,
            "test",
            "nn.RNN (tanh), 2 layers of 32, last step out[:, -1], Linear head",
        ),
        ZooEntry(
            "mobilenetv3_block",
            mobilenetv3_block,
            SMALL_IMAGE,
            "test",
            "MobileNetV3 blocks: expand, depthwise, SE with HardSigmoid, HardSwish, residual",
        ),
        ZooEntry(
            "convnext_block",
            convnext_block,
            SMALL_IMAGE,
            "test",
            "ConvNeXt blocks: depthwise 7x7, channels-last LayerNorm, Linear 4x, GELU, scale",
        ),
        ZooEntry(
            "shufflenet_split",
            shufflenet_split,
            SMALL_IMAGE,
            "test",
            "ShuffleNetV2 units: channel split (chunk), branches, concat, channel shuffle",
        ),
        ZooEntry(
            "fixed_batch_cnn",
            fixed_batch_cnn,
            (1, 28, 28),
            "test",
            "LeNet-like CNN with BatchNorm, exported with a fixed batch of 1",
            fixed_batch=1,
        ),
        ZooEntry("resnet18", resnet18, IMAGE, "arch", "ResNet-18 (He et al. 2016)"),
        ZooEntry("mobilenet_v2", mobilenet_v2, IMAGE, "arch", "MobileNetV2 (Sandler et al. 2018)"),
        ZooEntry(
            "efficientnet_b0", efficientnet_b0, IMAGE, "arch", "EfficientNet-B0 (Tan and Le 2019)"
        ),
        ZooEntry("densenet121", densenet121, IMAGE, "arch", "DenseNet-121 (Huang et al. 2017)"),
        ZooEntry(
            "regnet_x_400mf",
            regnet_x_400mf,
            IMAGE,
            "arch",
            "RegNetX-400MF (Radosavovic et al. 2020)",
        ),
        ZooEntry(
            "googlenet",
            googlenet,
            IMAGE,
            "arch",
            "GoogLeNet / Inception v1 with BatchNorm, no aux heads (Szegedy et al. 2015)",
        ),
        ZooEntry("squeezenet1_1", squeezenet1_1, IMAGE, "arch", "SqueezeNet 1.1 (Iandola et al.)"),
        ZooEntry(
            "m5", M5, (1, 8000), "arch", "M5 raw-waveform CNN, 1 s at 8 kHz (Dai et al. 2017)"
        ),
        ZooEntry(
            "kws_mlp",
            kws_mlp,
            (49, 10),
            "arch",
            "Keyword-spotting MLP (Hello Edge DNN-S) with BatchNorm on 49x10 MFCCs",
        ),
    ]


ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _entries()}
