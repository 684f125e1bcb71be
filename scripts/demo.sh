#!/usr/bin/env bash
# The main job on a bundled model: inspect, compile with calibration data, run on every backend.
set -euo pipefail
VENV=${1:-.venv}
ANACC="$VENV/bin/anacc"
MODEL=models/digits_cnn.onnx
DATA=models/data/digits_img
OUT=out
mkdir -p "$OUT"
echo "== anacc inspect $MODEL"
"$ANACC" inspect "$MODEL"
echo
echo "== anacc compile $MODEL --calib ${DATA}_calib.npz"
"$ANACC" compile "$MODEL" --calib "${DATA}_calib.npz" -o "$OUT/digits_cnn.anacc"
echo
echo "== accuracy on ${DATA}_test.npz"
"$VENV/bin/python" scripts/fp32_accuracy.py "$MODEL" "${DATA}_test.npz"
for backend in ideal quantized emulator; do
  "$ANACC" run "$OUT/digits_cnn.anacc" --data "${DATA}_test.npz" --backend "$backend"
done
echo
echo "== anacc report out/digits_cnn.anacc --data ${DATA}_test.npz --html out/digits_cnn_report.html"
"$ANACC" report "$OUT/digits_cnn.anacc" --data "${DATA}_test.npz" --html "$OUT/digits_cnn_report.html"
