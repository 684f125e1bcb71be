"""Train and export ``digits_mlp.onnx``: a 64-128-10 MLP on scikit-learn's 8x8 digits.

The model input is the 64 pixel values divided by 16, shape (N, 64), float32 in 0..1.
Writes ``digits_mlp.onnx`` and ``data/digits_{train,calib,test}.npz`` (the same splits as
``train_digits_cnn.py``, flat). Run from the repository root, either
``python -m models.train_digits_mlp`` or ``python models/train_digits_mlp.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

try:
    from . import _common
except ImportError:  # run as a plain file: its own folder is on sys.path
    import _common

SEED = 0
CALIB_SIZE = 128
TEST_SIZE = 360
CONFIG = _common.TrainConfig(epochs=60, batch_size=32, lr=3e-3, weight_decay=1e-4)


def load_splits(seed: int) -> dict[str, _common.Split]:
    """The digits as (N, 64) float32 in 0..1, split into train, calib and test by ``seed``."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return _common.split_data(x, digits.target, CALIB_SIZE, TEST_SIZE, np.random.default_rng(seed))


def build_model() -> nn.Module:
    """Linear(64->128), ReLU, Linear(128->10)."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def main(out_dir: Path) -> float:
    """Train, export and check the model; return its FP32 test accuracy."""
    torch.set_num_threads(1)
    splits = load_splits(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = build_model()
    _common.init_parameters(model, generator)
    _common.train(model, splits["train"], CONFIG, generator)
    return _common.ship(model, splits, "digits_mlp", "digits", out_dir)


if __name__ == "__main__":
    main(_common.parse_out_dir(__doc__.splitlines()[0]))
