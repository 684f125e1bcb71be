"""Train and export ``digits_cnn.onnx``: a small CNN with BatchNorm on scikit-learn's 8x8 digits.

The model input is the 8x8 image divided by 16, shape (N, 1, 8, 8), float32 in 0..1. The
BatchNormalization nodes stay in the exported graph (the compiler folds them). Writes
``digits_cnn.onnx`` and ``data/digits_img_{train,calib,test}.npz``: the same samples and
splits as ``train_digits_mlp.py``, as images. Run from the repository root, either
``python -m models.train_digits_cnn`` or ``python models/train_digits_cnn.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

try:
    from . import _common
    from .train_digits_mlp import load_splits
except ImportError:  # run as a plain file: its own folder is on sys.path
    import _common
    from train_digits_mlp import load_splits

SEED = 0
CONFIG = _common.TrainConfig(epochs=40, batch_size=32, lr=3e-3, weight_decay=1e-4)


def image_splits(seed: int) -> dict[str, _common.Split]:
    """The digits splits of ``train_digits_mlp`` reshaped to (N, 1, 8, 8)."""
    return {
        name: _common.Split(split.input.reshape(-1, 1, 8, 8), split.labels)
        for name, split in load_splits(seed).items()
    }


def build_model() -> nn.Module:
    """Conv(1->16, 3x3)-BN-ReLU, Conv(16->32, 3x3)-BN-ReLU, MaxPool 2, Flatten, Linear(512->10)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def main(out_dir: Path) -> float:
    """Train, export and check the model; return its FP32 test accuracy."""
    torch.set_num_threads(1)
    splits = image_splits(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = build_model()
    _common.init_parameters(model, generator)
    _common.train(model, splits["train"], CONFIG, generator)
    return _common.ship(model, splits, "digits_cnn", "digits_img", out_dir)


if __name__ == "__main__":
    main(_common.parse_out_dir(__doc__.splitlines()[0]))
