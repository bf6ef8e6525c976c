"""Engines as artifacts: build (ONNX -> engine), the manifest beside each engine, the compatibility
pre-flight, and the per-model fallback chain. TensorRT is imported only inside the functions that need it."""
