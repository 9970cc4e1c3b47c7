"""What runs the models: precision (resolved once per run and phase), several processes, model and
tokenizer loading from the Hub, local folders and packages, and the ONNX Runtime engine."""
