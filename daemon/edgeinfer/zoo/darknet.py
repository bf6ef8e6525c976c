"""Convert a darknet YOLO model (`.cfg` + `.weights`) to ONNX with numpy and `onnx.helper` only.

Supported sections: [net], [convolutional] (batch_normalize folded into the conv, activation leaky or
linear, groups), [maxpool], [route] (one or more layers, absolute or negative indices), [upsample] and
[yolo]. Anything else raises `DarknetError` naming the file, the line and what is unsupported.

The ONNX model has one input and one output:

- `images`: float32 [batch, 3, H, W] (H, W from [net]), RGB, values 0..1, plainly resized;
- `detections`: float32 [batch, num_boxes, 5 + num_classes] in the YOLOv3/v5 layout: cx, cy, w, h in input
  pixels, objectness (sigmoid), per-class probabilities (sigmoid, not multiplied by the objectness).

The yolo heads are decoded inside the graph, so a standard v5-layout decoder (score = obj * cls, NMS) can
consume the output directly. Boxes are ordered head by head (cfg order), then anchor, row, column.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["DarknetError", "convert_darknet"]

OPSET = 17
# IR 8 is the version that introduced opset 17: older runtimes (TensorRT 10.3 on JetPack 6, old
# onnxruntime builds) refuse models stamped with the newest IR version that onnx writes by default.
IR_VERSION = 8
LEAKY_SLOPE = 0.1
# darknet (AlexeyAB) and OpenCV normalise with sqrt(variance + 1e-6)
BN_EPSILON = 1e-6
SUPPORTED_SECTIONS = ("net", "convolutional", "maxpool", "route", "upsample", "yolo")


class DarknetError(ValueError):
    """A darknet cfg or weights file that cannot be converted; the message names the file and the problem."""


@dataclass
class _Section:
    kind: str
    line: int
    options: dict[str, str] = field(default_factory=dict)
    # keys the converter read; anything left over is reported as unsupported
    used: set[str] = field(default_factory=set)


@dataclass
class _Tensor:
    """A layer's output as the graph sees it: tensor name and per-image shape (C, H, W)."""

    name: str
    channels: int
    height: int
    width: int


# Keys that only matter for training (or are informational) and do not change inference.
_TRAINING_KEYS = {
    "net": None,  # [net] holds mostly training settings; only the input size and channels are read
    "convolutional": set(),
    "maxpool": set(),
    "route": set(),
    "upsample": set(),
    "yolo": {"jitter", "ignore_thresh", "truth_thresh", "random", "iou_normalizer", "cls_normalizer",
             "iou_loss", "iou_thresh", "max_delta", "counters_per_class", "label_smooth_eps",
             "obj_normalizer", "beta_nms", "nms_kind", "resize", "focal_loss", "uc_normalizer",
             "objectness_smooth", "max", "map", "random_start_percent", "show_details", "embedding_layer",
             "track_history_size", "sim_thresh", "dets_for_track", "dets_for_show", "track_ciou_norm"},
}


def parse_cfg(cfg_path: Path) -> list[_Section]:
    """Read a darknet cfg into sections; comments start with '#' or ';'."""
    try:
        text = Path(cfg_path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DarknetError(f"{cfg_path}: cannot read cfg: {exc}") from exc
    sections: list[_Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise DarknetError(f"{cfg_path}:{number}: malformed section header {line!r}")
            sections.append(_Section(kind=line[1:-1].strip().lower(), line=number))
            continue
        if "=" not in line:
            raise DarknetError(f"{cfg_path}:{number}: expected 'key=value', got {line!r}")
        if not sections:
            raise DarknetError(f"{cfg_path}:{number}: option {line!r} before the first [section]")
        key, value = line.split("=", 1)
        sections[-1].options[key.strip()] = value.strip()
    if not sections or sections[0].kind not in ("net", "network"):
        raise DarknetError(f"{cfg_path}: the first section must be [net]")
    return sections


class _Options:
    """Typed access to one section's options with errors that point at the cfg line."""

    def __init__(self, cfg_path: Path, section: _Section, index: int | None):
        self.cfg_path = cfg_path
        self.section = section
        where = f"[{section.kind}]" if index is None else f"layer {index} [{section.kind}]"
        self.where = f"{cfg_path}:{section.line}: {where}"

    def error(self, message: str) -> DarknetError:
        return DarknetError(f"{self.where}: {message}")

    def _raw(self, key: str) -> str | None:
        self.section.used.add(key)
        return self.section.options.get(key)

    def integer(self, key: str, default: int | None = None) -> int:
        raw = self._raw(key)
        if raw is None:
            if default is None:
                raise self.error(f"missing required option {key!r}")
            return default
        try:
            return int(raw)
        except ValueError:
            raise self.error(f"option {key}={raw!r} is not an integer") from None

    def number(self, key: str, default: float) -> float:
        raw = self._raw(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise self.error(f"option {key}={raw!r} is not a number") from None

    def text(self, key: str, default: str) -> str:
        raw = self._raw(key)
        return default if raw is None else raw

    def integers(self, key: str) -> list[int] | None:
        raw = self._raw(key)
        if raw is None:
            return None
        try:
            return [int(item) for item in raw.split(",") if item.strip()]
        except ValueError:
            raise self.error(f"option {key}={raw!r} is not a comma-separated list of integers") from None

    def reject_unknown(self) -> None:
        ignorable = _TRAINING_KEYS.get(self.section.kind, set())
        if ignorable is None:
            return
        unknown = sorted(set(self.section.options) - self.section.used - ignorable)
        if unknown:
            raise self.error(f"unsupported option(s) {', '.join(unknown)} (the converter would ignore them "
                             "and produce a model that differs from darknet)")


class _WeightsReader:
    """Sequential reader over the float32 payload of a darknet weights file."""

    def __init__(self, weights_path: Path):
        self.path = weights_path
        try:
            data = Path(weights_path).read_bytes()
        except OSError as exc:
            raise DarknetError(f"{weights_path}: cannot read weights: {exc}") from exc
        self.size = len(data)
        if self.size < 16:
            raise DarknetError(f"{weights_path}: {self.size} bytes is too short for a darknet weights header")
        major, minor, revision = (int(v) for v in np.frombuffer(data, dtype="<i4", count=3))
        # darknet stores `seen` as int64 from format 0.2 on, as int32 before
        seen_bytes = 8 if (major * 10 + minor >= 2 and major < 1000 and minor < 1000) else 4
        self.version = (major, minor, revision)
        self.offset = 12 + seen_bytes
        if (self.size - self.offset) % 4:
            raise DarknetError(f"{weights_path}: payload of {self.size - self.offset} bytes after the header "
                               "is not a whole number of float32 values (corrupted or not a darknet file)")
        self._data = data

    def take(self, count: int, what: str) -> np.ndarray:
        end = self.offset + 4 * count
        if end > self.size:
            raise DarknetError(
                f"{self.path}: weights file is truncated or does not match the cfg: {what} needs {count} "
                f"float32 values at byte {self.offset}, but the file ends at byte {self.size}")
        values = np.frombuffer(self._data, dtype="<f4", count=count, offset=self.offset)
        self.offset = end
        return values.astype(np.float64)

    def finish(self) -> None:
        if self.offset != self.size:
            extra = self.size - self.offset
            raise DarknetError(
                f"{self.path}: {extra} bytes ({extra // 4} float32 values) left over after the last layer: "
                "the weights file does not match the cfg")


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _convolutional(opts: _Options, index: int, source: _Tensor, weights: _WeightsReader,
                   graph: _GraphBuilder) -> _Tensor:
    filters = opts.integer("filters", 1)
    size = opts.integer("size", 1)
    stride = opts.integer("stride", 1)
    groups = opts.integer("groups", 1)
    padding = size // 2 if opts.integer("pad", 0) else opts.integer("padding", 0)
    batch_normalize = opts.integer("batch_normalize", 0)
    activation = opts.text("activation", "logistic")
    if opts.integer("stride_x", stride) != stride or opts.integer("stride_y", stride) != stride:
        raise opts.error("different stride_x / stride_y are not supported")
    if opts.integer("dilation", 1) != 1:
        raise opts.error("dilation other than 1 is not supported")
    if activation not in ("leaky", "linear"):
        raise opts.error(f"activation {activation!r} is not supported (only leaky and linear)")
    if filters < 1 or size < 1 or stride < 1 or groups < 1 or source.channels % groups:
        raise opts.error(f"invalid filters={filters} size={size} stride={stride} groups={groups} "
                         f"for {source.channels} input channels")
    height = (source.height + 2 * padding - size) // stride + 1
    width = (source.width + 2 * padding - size) // stride + 1
    if height < 1 or width < 1:
        raise opts.error(f"output would be empty for input {source.height}x{source.width}")

    what = f"layer {index} [convolutional]"
    bias = weights.take(filters, f"{what} biases")
    if batch_normalize:
        scales = weights.take(filters, f"{what} batch-norm scales")
        means = weights.take(filters, f"{what} batch-norm means")
        variances = weights.take(filters, f"{what} batch-norm variances")
    kernel_shape = (filters, source.channels // groups, size, size)
    kernel = weights.take(int(np.prod(kernel_shape)), f"{what} weights").reshape(kernel_shape)
    if batch_normalize:
        # fold y = scale * (conv(x) - mean) / sqrt(var + eps) + bias into the conv (in float64, then cast)
        factor = scales / np.sqrt(variances + BN_EPSILON)
        kernel = kernel * factor[:, None, None, None]
        bias = bias - means * factor

    prefix = f"layer{index}_conv"
    conv = graph.node(
        "Conv",
        [source.name, graph.constant(f"{prefix}.weight", kernel.astype(np.float32)),
         graph.constant(f"{prefix}.bias", bias.astype(np.float32))],
        prefix, kernel_shape=[size, size], strides=[stride, stride], pads=[padding] * 4, group=groups)
    if activation == "leaky":
        conv = graph.node("LeakyRelu", [conv], f"layer{index}_leaky", alpha=LEAKY_SLOPE)
    return _Tensor(conv, filters, height, width)


def _maxpool(opts: _Options, index: int, source: _Tensor, graph: _GraphBuilder) -> _Tensor:
    stride = opts.integer("stride", 1)
    size = opts.integer("size", stride)
    # darknet pads size-1 by default, padding//2 before and the rest after: with size=2 stride=1 the
    # single padded row/column sits at the bottom/right and the spatial size is kept
    padding = opts.integer("padding", size - 1)
    if opts.integer("stride_x", stride) != stride or opts.integer("stride_y", stride) != stride:
        raise opts.error("different stride_x / stride_y are not supported")
    if opts.integer("maxpool_depth", 0) or opts.integer("antialiasing", 0):
        raise opts.error("maxpool_depth and antialiasing are not supported")
    if size < 1 or stride < 1 or not 0 <= padding < size:
        raise opts.error(f"invalid size={size} stride={stride} padding={padding}")
    height = (source.height + padding - size) // stride + 1
    width = (source.width + padding - size) // stride + 1
    if height < 1 or width < 1:
        raise opts.error(f"output would be empty for input {source.height}x{source.width}")
    if size == 1 and stride == 1:
        return source
    before, after = padding // 2, padding - padding // 2
    out = graph.node("MaxPool", [source.name], f"layer{index}_maxpool", kernel_shape=[size, size],
                     strides=[stride, stride], pads=[before, before, after, after])
    return _Tensor(out, source.channels, height, width)


def _route(opts: _Options, index: int, outputs: list[_Tensor | None], graph: _GraphBuilder) -> _Tensor:
    layers = opts.integers("layers")
    if not layers:
        raise opts.error("option 'layers' is missing or empty")
    if opts.integer("groups", 1) != 1 or opts.integer("group_id", 0) != 0:
        raise opts.error("route groups/group_id are not supported")
    sources: list[_Tensor] = []
    for layer in layers:
        absolute = index + layer if layer < 0 else layer
        if not 0 <= absolute < index:
            raise opts.error(f"layer {layer} does not refer to an earlier layer")
        tensor = outputs[absolute]
        if tensor is None:
            raise opts.error(f"layer {layer} refers to a [yolo] layer, which has no routable output")
        sources.append(tensor)
    first = sources[0]
    if any((s.height, s.width) != (first.height, first.width) for s in sources):
        shapes = ", ".join(f"{s.height}x{s.width}" for s in sources)
        raise opts.error(f"cannot concatenate layers of different spatial sizes ({shapes})")
    if len(sources) == 1:
        return first
    out = graph.node("Concat", [s.name for s in sources], f"layer{index}_route", axis=1)
    return _Tensor(out, sum(s.channels for s in sources), first.height, first.width)


def _upsample(opts: _Options, index: int, source: _Tensor, graph: _GraphBuilder) -> _Tensor:
    stride = opts.integer("stride", 2)
    if stride < 1:
        raise opts.error(f"stride={stride} is not supported (only upsampling by a positive integer)")
    if opts.number("scale", 1.0) != 1.0:
        raise opts.error("option 'scale' other than 1 is not supported")
    scales = graph.constant(f"layer{index}_upsample.scales", np.array([1, 1, stride, stride], np.float32))
    # asymmetric + floor repeats each pixel `stride` times, exactly like darknet's nearest upsampling
    out = graph.node("Resize", [source.name, "", scales], f"layer{index}_upsample", mode="nearest",
                     coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return _Tensor(out, source.channels, source.height * stride, source.width * stride)


def _yolo(opts: _Options, index: int, source: _Tensor, net_size: tuple[int, int],
          graph: _GraphBuilder) -> tuple[str, int, int]:
    """Decode one yolo head; returns (tensor [batch, boxes, 5 + classes], number of boxes, classes)."""
    classes = opts.integer("classes", 20)
    anchors_flat = opts.integers("anchors") or []
    total = opts.integer("num", len(anchors_flat) // 2)
    mask = opts.integers("mask")
    if mask is None:
        mask = list(range(total))
    scale_xy = opts.number("scale_x_y", 1.0)
    if opts.integer("new_coords", 0):
        raise opts.error("new_coords=1 (scaled-YOLOv4 box encoding) is not supported")
    if len(anchors_flat) % 2 or len(anchors_flat) < 2 * total:
        raise opts.error(f"'anchors' must hold {total} width,height pairs, got {len(anchors_flat)} numbers")
    if not mask or any(not 0 <= m < total for m in mask):
        raise opts.error(f"mask {mask} does not index the {total} anchors")
    count = len(mask)
    per_box = 5 + classes
    if source.channels != count * per_box:
        raise opts.error(f"input has {source.channels} channels but {count} anchors x "
                         f"(5 + {classes} classes) = {count * per_box} are needed")
    cells = source.height * source.width
    net_h, net_w = net_size
    stride = np.array([net_w / source.width, net_h / source.height], np.float64)
    anchors = np.array(anchors_flat, np.float64).reshape(-1, 2)[mask]

    # xy = (sigmoid(t) * s - (s - 1) / 2 + cell) * stride == sigmoid(t) * (s * stride) + offset
    rows, cols = np.meshgrid(np.arange(source.height), np.arange(source.width), indexing="ij")
    cell = np.stack([cols.ravel(), rows.ravel()], axis=-1).astype(np.float64)  # (cells, 2) as (x, y)
    offset = (cell - 0.5 * (scale_xy - 1.0)) * stride

    prefix = f"layer{index}_yolo"
    shaped = graph.node("Reshape", [source.name, graph.constant(
        f"{prefix}.shape_in", np.array([-1, count, per_box, cells], np.int64))], f"{prefix}_reshape")
    boxes = graph.node("Transpose", [shaped], f"{prefix}_transpose", perm=[0, 1, 3, 2])  # [N, A, cells, 85]
    split = graph.constant(f"{prefix}.split", np.array([2, 2, 1 + classes], np.int64))
    xy_raw, wh_raw, scores_raw = f"{prefix}_xy_raw", f"{prefix}_wh_raw", f"{prefix}_scores_raw"
    graph.nodes.append(helper.make_node("Split", [boxes, split], [xy_raw, wh_raw, scores_raw],
                                        name=f"{prefix}_split", axis=-1))
    xy = graph.node("Sigmoid", [xy_raw], f"{prefix}_xy_sigmoid")
    xy = graph.node("Mul", [xy, graph.constant(f"{prefix}.xy_scale", (scale_xy * stride).astype(np.float32))],
                    f"{prefix}_xy_scaled")
    xy = graph.node("Add", [xy, graph.constant(f"{prefix}.grid", offset.astype(np.float32)[None, None])],
                    f"{prefix}_xy")
    wh = graph.node("Exp", [wh_raw], f"{prefix}_wh_exp")
    wh = graph.node("Mul", [wh, graph.constant(f"{prefix}.anchors",
                                               anchors.astype(np.float32)[None, :, None, :])], f"{prefix}_wh")
    scores = graph.node("Sigmoid", [scores_raw], f"{prefix}_scores")
    decoded = graph.node("Concat", [xy, wh, scores], f"{prefix}_decoded", axis=-1)
    out = graph.node("Reshape", [decoded, graph.constant(
        f"{prefix}.shape_out", np.array([-1, count * cells, per_box], np.int64))], f"{prefix}_boxes")
    return out, count * cells, classes


def build_model(cfg_path: Path, weights_path: Path) -> onnx.ModelProto:
    """Build (and check) the ONNX model in memory; see the module docstring for its inputs and outputs."""
    cfg_path, weights_path = Path(cfg_path), Path(weights_path)
    sections = parse_cfg(cfg_path)
    net = _Options(cfg_path, sections[0], None)
    height, width, channels = net.integer("height"), net.integer("width"), net.integer("channels", 3)
    if height < 1 or width < 1 or channels < 1:
        raise net.error(f"invalid input size {channels}x{height}x{width}")
    weights = _WeightsReader(weights_path)
    graph = _GraphBuilder()

    current = _Tensor("images", channels, height, width)
    outputs: list[_Tensor | None] = []
    heads: list[tuple[str, int, int]] = []
    for index, section in enumerate(sections[1:]):
        opts = _Options(cfg_path, section, index)
        kind = section.kind
        if kind == "convolutional":
            current = _convolutional(opts, index, current, weights, graph)
        elif kind == "maxpool":
            current = _maxpool(opts, index, current, graph)
        elif kind == "route":
            current = _route(opts, index, outputs, graph)
        elif kind == "upsample":
            current = _upsample(opts, index, current, graph)
        elif kind == "yolo":
            heads.append(_yolo(opts, index, current, (height, width), graph))
        else:
            supported = ", ".join(f"[{name}]" for name in SUPPORTED_SECTIONS)
            raise opts.error(f"unsupported layer type [{kind}] (supported: {supported})")
        opts.reject_unknown()
        # a yolo layer's output is a loss-side transform of its input; nothing in inference routes to it
        outputs.append(None if kind == "yolo" else current)
    weights.finish()
    if not heads:
        raise DarknetError(f"{cfg_path}: no [yolo] layer, so the model has no detections output")
    classes = {head_classes for _, _, head_classes in heads}
    if len(classes) != 1:
        raise DarknetError(f"{cfg_path}: [yolo] layers disagree on the number of classes: {sorted(classes)}")
    num_classes = classes.pop()
    num_boxes = sum(boxes for _, boxes, _ in heads)
    if len(heads) == 1:
        graph.node("Identity", [heads[0][0]], "detections")
    else:
        graph.node("Concat", [name for name, _, _ in heads], "detections", axis=1)

    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", channels, height, width])
    detections = helper.make_tensor_value_info("detections", TensorProto.FLOAT,
                                               ["batch", num_boxes, 5 + num_classes])
    model_graph = helper.make_graph(graph.nodes, cfg_path.stem.replace("-", "_"), [images], [detections],
                                    initializer=graph.initializers)
    model = helper.make_model(model_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgeinfer.zoo.darknet", ir_version=IR_VERSION)
    model.doc_string = (f"Converted from darknet {cfg_path.name} + {weights_path.name}. Input RGB 0..1, "
                        "plain resize; output cx, cy, w, h (input pixels), objectness, class probabilities.")
    helper.set_model_props(model, {"layout": "yolo-v5", "preprocess": "resize", "color": "rgb",
                                   "scale": "1/255", "source": f"darknet:{cfg_path.name}"})
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:  # a converter bug rather than a bad file, but say which
        raise DarknetError(f"{cfg_path}: converted model fails the ONNX checker: {exc}") from exc
    return model


def convert_darknet(cfg_path: str | os.PathLike, weights_path: str | os.PathLike,
                    onnx_path: str | os.PathLike) -> Path:
    """Convert `cfg_path` + `weights_path` to an ONNX file at `onnx_path` and return its path.

    The file is written to a temporary name in the same folder and renamed into place, so an interrupted
    conversion never leaves a half-written model behind. Raises `DarknetError` for bad or unsupported files.
    """
    model = build_model(Path(cfg_path), Path(weights_path))
    target = Path(onnx_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(model.SerializeToString())
        os.chmod(temp_name, 0o644)  # mkstemp makes 0600; the daemon may run as another user
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target
