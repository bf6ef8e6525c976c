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
    rows, nodes, inits, inputs = _detector_graph_parts(rows, size)
    nodes.append(helper.make_node("Identity", ["normal"], ["detections"]))
    return _save(path, helper.make_graph(nodes, "constant_detector", inputs, [_detections_output(rows)], inits))


def _detector_graph_parts(rows: np.ndarray, size: int):
    """The constant detector's nodes, writing `normal` [N, K, C], plus what they need."""
    rows = np.asarray(rows, dtype=np.float32)[None]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Squeeze", ["mean", "axes3"], ["mean3"]),
        helper.make_node("Mul", ["mean3", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "rows"], ["normal"]),
        helper.make_node("ReduceMax", ["images"], ["brightest"], keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(rows, "rows"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array([3], dtype=np.int64), "axes3"),
    ]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])]
    return rows, nodes, inits, inputs


def _detections_output(rows: np.ndarray):
    return helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["N", *rows.shape[1:]])


def _pass_through_branch():
    """An If branch that returns the normal output unchanged."""
    return helper.make_graph(
        nodes=[helper.make_node("Identity", ["normal"], ["pass_out"])],
        name="pass", inputs=[],
        outputs=[helper.make_tensor_value_info("pass_out", TensorProto.FLOAT, None)],
    )


def _white_switch(nodes: list, inits: list, then_branch, white_above: float) -> None:
    """detections = then_branch if the brightest input value exceeds white_above, else the normal output."""
    nodes += [
        helper.make_node("Greater", ["brightest", "threshold"], ["is_white"]),
        helper.make_node("If", ["is_white"], ["detections"], then_branch=then_branch,
                         else_branch=_pass_through_branch()),
    ]
    inits.append(numpy_helper.from_array(np.array(white_above, dtype=np.float32), "threshold"))


def _save(path: Path, graph) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def hanging_detector(path: Path, rows: np.ndarray, size: int = 64, white_above: float = 0.9) -> Path:
    """Like `constant_detector`, but an image whose brightest input value exceeds `white_above` sends the
    session into an ONNX Loop of 2**62 iterations: a real inference that never returns (for watchdog tests)."""
    rows, nodes, inits, inputs = _detector_graph_parts(rows, size)
    loop_body = helper.make_graph(
        nodes=[
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        name="spin",
        inputs=[
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, []),
        ],
        outputs=[
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, []),
        ],
        initializer=[numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")],
    )
    hang_branch = helper.make_graph(
        nodes=[
            helper.make_node("Loop", ["forever", "true", "zero"], ["spun"], body=loop_body),
            helper.make_node("Mul", ["spun", "zero"], ["nothing"]),
            helper.make_node("Add", ["normal", "nothing"], ["hung_out"]),
        ],
        name="hang",
        inputs=[],
        outputs=[helper.make_tensor_value_info("hung_out", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(np.array(2**62, dtype=np.int64), "forever"),
            numpy_helper.from_array(np.array(True), "true"),
        ],
    )
    _white_switch(nodes, inits, hang_branch, white_above)
    return _save(path, helper.make_graph(nodes, "hanging_detector", inputs, [_detections_output(rows)], inits))


def malformed_on_white_detector(path: Path, rows: np.ndarray, size: int = 64, white_above: float = 0.9) -> Path:
    """Like `constant_detector`, but for an image whose brightest input value exceeds `white_above` the
    output loses its class columns ([N, K, 3]), which no YOLO decoder accepts: a real decoder failure."""
    rows, nodes, inits, inputs = _detector_graph_parts(rows, size)
    broken_branch = helper.make_graph(
        nodes=[helper.make_node("Slice", ["normal", "starts", "ends", "axis2"], ["broken_out"])],
        name="broken", inputs=[],
        outputs=[helper.make_tensor_value_info("broken_out", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(np.array([0], dtype=np.int64), "starts"),
            numpy_helper.from_array(np.array([3], dtype=np.int64), "ends"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        ],
    )
    _white_switch(nodes, inits, broken_branch, white_above)
    return _save(path, helper.make_graph(nodes, "malformed_on_white_detector", inputs, [_detections_output(rows)],
                                         inits))


def slow_detector(path: Path, rows: np.ndarray, iterations: int, size: int = 64, side: int = 128) -> Path:
    """Like `constant_detector`, but every inference first runs `iterations` products of a side x side matrix in an
    ONNX Loop: a real model whose inference takes long (tens to hundreds of ms), for latest-frame tests."""
    rows, nodes, inits, inputs = _detector_graph_parts(rows, size)
    body = helper.make_graph(
        nodes=[
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["m_in", "weights"], ["product"]),
            helper.make_node("Tanh", ["product"], ["m_out"]),  # keeps values bounded over many products
        ],
        name="work",
        inputs=[
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_in", TensorProto.FLOAT, [side, side]),
        ],
        outputs=[
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_out", TensorProto.FLOAT, [side, side]),
        ],
    )
    rng = np.random.default_rng(0)
    nodes[3] = helper.make_node("Add", ["zeros", "rows"], ["normal_rows"])  # the constant rows, as before
    nodes += [
        helper.make_node("Loop", ["count", "true", "start"], ["worked"], body=body),
        helper.make_node("ReduceSum", ["worked"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["normal_rows", "nothing"], ["detections"]),
    ]
    inits += [
        numpy_helper.from_array(np.array(iterations, dtype=np.int64), "count"),
        numpy_helper.from_array(np.array(True), "true"),
        numpy_helper.from_array(rng.standard_normal((side, side)).astype(np.float32) * 0.1, "start"),
        numpy_helper.from_array(rng.standard_normal((side, side)).astype(np.float32) * 0.1, "weights"),
    ]
    return _save(path, helper.make_graph(nodes, "slow_detector", inputs, [_detections_output(rows)], inits))

