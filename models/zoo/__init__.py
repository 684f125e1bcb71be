"""A zoo of model definitions with seeded weights, and their export to ONNX.

Every model is written here in plain torch (no torchvision) and has random but sensibly
scaled weights that are a function of a seed alone (see `weights`), so the zoo needs no
downloads and each exported file is reproducible. Two families:

- "test": small models (well under a million parameters, exported in seconds) that each bring
  one kind of graph the compiler must take: hand-written attention, ``nn.TransformerEncoder``,
  LSTM/GRU/RNN, MobileNetV3, ConvNeXt and ShuffleNetV2 blocks, a fixed-batch CNN.
- "arch": real architectures written from their papers, for benchmarks: ResNet-18,
  MobileNetV2, EfficientNet-B0, DenseNet-121, RegNetX-400MF, GoogLeNet, SqueezeNet 1.1,
  M5 (raw audio) and a keyword-spotting MLP.

Use::

    from models.zoo import ZOO, example_input, export

    model = ZOO["resnet18"].build(seed=0)                # torch, eval mode
    path = export("resnet18", "out/resnet18.onnx", exporter="dynamo")
    x = example_input("resnet18", batch=3, seed=1)       # numpy, feed as "input"

``python -m models.zoo_check`` exports every entry with both exporters and compares
onnxruntime's output with torch's.
"""

from .export import EXPORTERS, INPUT_NAME, OUTPUT_NAME, example_input, export
from .registry import ZOO, ZooEntry

__all__ = ["EXPORTERS", "INPUT_NAME", "OUTPUT_NAME", "ZOO", "ZooEntry", "example_input", "export"]
