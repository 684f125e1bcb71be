"""FP32 reference accuracy of an ONNX model on an .npz split, with onnxruntime."""

import sys

import numpy as np
import onnxruntime as ort


def main(model: str, data: str) -> None:
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    with np.load(data, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    labels = arrays.pop("labels")
    name = sess.get_inputs()[0].name
    x = next(iter(arrays.values())).astype(np.float32)
    logits = sess.run(None, {name: x})[0]
    acc = float((logits.argmax(axis=1) == labels).mean())
    print(f"onnxruntime FP32: {len(labels)} samples, top-1 accuracy {100 * acc:.2f} %")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
