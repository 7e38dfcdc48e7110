"""Model side: networks, datasets, ONNX export and the model manifest (the contract with the runtime)."""
