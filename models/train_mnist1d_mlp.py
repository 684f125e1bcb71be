"""Train and export ``mnist1d_mlp.onnx``: an MLP with BatchNorm on MNIST-1D.

MNIST-1D is generated procedurally by ``mnist1d.data.make_dataset`` (no download; the
package's ``get_dataset`` would fetch a file from the network and is never called). The model
input is the standard MNIST-1D signal, shape (N, 40), float32, signed (zero mean, unit standard
deviation over the data set) and left as generated. The model stands in for a keyword-spotting
MLP with BatchNorm. Writes ``mnist1d_mlp.onnx`` and ``data/mnist1d_{train,calib,test}.npz``.
Run from the repository root, either ``python -m models.train_mnist1d_mlp`` or
``python models/train_mnist1d_mlp.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn

try:
    from . import _common
except ImportError:  # run as a plain file: its own folder is on sys.path
    import _common

SEED = 0
NUM_SAMPLES = 14000
CALIB_SIZE = 256
TEST_SIZE = 2000
CONFIG = _common.TrainConfig(epochs=60, batch_size=128, lr=3e-3, weight_decay=1e-2)


def load_splits(seed: int) -> dict[str, _common.Split]:
    """MNIST-1D as (N, 40) float32, split into train, calib and test by ``seed``."""
    args = get_dataset_args()
    args.num_samples = NUM_SAMPLES
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]])
    labels = np.concatenate([data["y"], data["y_test"]])
    return _common.split_data(x, labels, CALIB_SIZE, TEST_SIZE, np.random.default_rng(seed))


def build_model() -> nn.Module:
    """Linear(40->256)-BN-ReLU, Linear(256->128)-BN-ReLU, Linear(128->10)."""
    return nn.Sequential(
        nn.Linear(40, 256),
        nn.BatchNorm1d(256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.BatchNorm1d(128),
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
    _common.train(model, splits["train"], CONFIG, generator)
    return _common.ship(model, splits, "mnist1d_mlp", "mnist1d", out_dir)


if __name__ == "__main__":
    main(_common.parse_out_dir(__doc__.splitlines()[0]))
