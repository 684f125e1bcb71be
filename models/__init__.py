"""Reference ONNX models shipped with anacc and the scripts that train and export them."""
