"""Small real ONNX models in each "bring your own model" layout, with outputs a test knows exactly.

No pretrained transformer detector ships in a package reachable here, so these stand in for RT-DETR,
DETR, RF-DETR and D-FINE exports: the same input and output names, shapes, types and metadata, constant
answers. Every graph still reads its image (a mean times zero is added), so ONNX Runtime runs them on the
real preprocessed tensors; the D-FINE-style model really scales its normalised boxes by the
`orig_target_sizes` input it is fed, so a wrong fill shows up as wrong boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}


def constant_outputs_model(
    path: Path,
    outputs: Sequence[tuple[str, np.ndarray]],
    size: tuple[int, int] = (64, 64),
    *,
    input_name: str = "images",
    metadata: dict[str, str] | None = None,
    dynamic_hw: bool = False,
    size_input: str | None = None,
    scale_by_size: str | None = None,
) -> Path:
    """A model answering every image with `outputs` (each [1, ...], float32 or int64).

    `size_input` adds a second input [1, 2] int64 (w, h); the output named `scale_by_size` ([1, K, 4],
    normalised xyxy) is then multiplied by (w, h, w, h) from that input, as D-FINE's postprocessor does.
    """
    height, width = size
    hw = ["H", "W"] if dynamic_hw else [height, width]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, *hw])]
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["zero_f"]),
        helper.make_node("Cast", ["zero_f"], ["zero_i"], to=TensorProto.INT64),
    ]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    graph_outputs = []
    if size_input is not None:
        inputs.append(helper.make_tensor_value_info(size_input, TensorProto.INT64, [1, 2]))
        nodes += [
            helper.make_node("Cast", [size_input], ["size_f"], to=TensorProto.FLOAT),
            helper.make_node("Concat", ["size_f", "size_f"], ["size4"], axis=1),
            helper.make_node("Unsqueeze", ["size4", "axis1"], ["size_scale"]),
        ]
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    for name, value in outputs:
        value = np.asarray(value)
        const = f"{name}_const"
        inits.append(numpy_helper.from_array(value, const))
        zero = "zero_i" if value.dtype == np.int64 else "zero_f"
        if name == scale_by_size:
            nodes.append(helper.make_node("Mul", [const, "size_scale"], [f"{name}_scaled"]))
            nodes.append(helper.make_node("Add", [f"{name}_scaled", zero], [name]))
        else:
            nodes.append(helper.make_node("Add", [const, zero], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, _ONNX_TYPES[value.dtype], list(value.shape)))
    graph = helper.make_graph(nodes, "constant_outputs", inputs, graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
