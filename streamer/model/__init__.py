"""Model side: networks, datasets, ONNX export, int8 quantization and the model manifest (the contract with
the runtime)."""
