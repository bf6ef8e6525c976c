"""Small real ONNX models built in tests, for runs that need no 34 MB download.

`constant_detector` answers every image with the same YOLO v5-layout rows, so a test knows exactly what the
pipeline must publish; its graph still reads the input, so the backend runs a real session on real tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def constant_detector(path: Path, rows: np.ndarray, size: int = 64, opset: int = 17) -> Path:
    """rows: [K, 5+nc] in input pixels (cx, cy, w, h, obj, class probs). Output [N, K, 5+nc], dynamic N."""
    rows = np.asarray(rows, dtype=np.float32)[None]
    graph = helper.make_graph(
        nodes=[
            helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),  # [N,1,1,1]
            helper.make_node("Squeeze", ["mean", "axes3"], ["mean3"]),  # [N,1,1]
            helper.make_node("Mul", ["mean3", "zero"], ["zeros"]),
            helper.make_node("Add", ["zeros", "rows"], ["detections"]),  # broadcast to [N,K,C]
        ],
        name="constant_detector",
        inputs=[helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        outputs=[helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["N", *rows.shape[1:]])],
        initializer=[
            numpy_helper.from_array(rows, "rows"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
            numpy_helper.from_array(np.array([3], dtype=np.int64), "axes3"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
