"""edgeinfer: an inference daemon for robots and edge boxes.

The core (config, frame, pipeline, decoders, watchdog) imports no optional package; plugins that need
TensorRT, CUDA, rclpy or tritonclient import them lazily so `import edgeinfer` works on a bare box.
"""

__version__ = "0.1.0"
