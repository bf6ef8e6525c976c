"""`edgeinfer init MODEL --source SRC --output KIND`: a commented config from a model file and a source.

The model file is read (ONNX metadata, input and output shapes, a labels file beside it) to pick preprocessing
and a decoder; the result is then loaded and fitted exactly as `check` does, and where the decoder reading is
ambiguous the YOLO layouts are tried in turn, keeping the first that fits. Paths are written absolute, so the
config works wherever it is saved.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import parse_config
from ..pipeline import check_models
from ..problems import ConfigError
from .parsers import OUTPUT_KINDS

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".h264", ".h265")
LABEL_FILES = ("labels.txt", "classes.txt", "coco.names")  # then any *.names / *.labels beside the model
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class InitError(ValueError):
    """The model or the source cannot be made into a config; the message says what to pass instead."""


@dataclass
class Tensor:
    name: str
    shape: tuple[int | None, ...]


@dataclass
class ModelFacts:
    """What the model file says about itself, without running it."""

    path: Path
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_engine(self) -> bool:
        return self.path.suffix.lower() in ENGINE_SUFFIXES

    @property
    def ultralytics(self) -> bool:
        return "Ultralytics" in self.metadata.get("author", "") or {"names", "imgsz", "task"} <= set(self.metadata)

    @property
    def edgeinfer_darknet(self) -> bool:  # written by our own darknet converter (zoo/darknet.py)
        return self.metadata.get("source", "").startswith("darknet:")


def read_model(path: Path) -> ModelFacts:
    facts = ModelFacts(path=path)
    if facts.is_engine:
        return facts  # an engine's tensors need TensorRT; `check` reads them where it is installed
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, google.protobuf errors ...
        raise InitError(f"{path} cannot be read as an ONNX model: {exc}") from exc
    initializers = {init.name for init in model.graph.initializer}

    def tensors(values) -> list[Tensor]:
        return [Tensor(v.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                     for d in v.type.tensor_type.shape.dim))
                for v in values if v.name not in initializers]

    facts.inputs, facts.outputs = tensors(model.graph.input), tensors(model.graph.output)
    facts.metadata = {prop.key: prop.value for prop in model.metadata_props}
    return facts


# -- sources and outputs ----------------------------------------------------------------------------------------


def source_entry(spec: str) -> tuple[dict[str, Any], str]:
    """A `sources[]` entry for what the user typed, and a comment on it."""
    text = spec.strip()
    if text == "synthetic":
        return {"id": "test", "type": "synthetic", "width": 640, "height": 480, "fps": 10}, "a moving test pattern"
    if re.fullmatch(r"\d+", text) or text.startswith("/dev/video"):
        device: int | str = int(text) if text.isdigit() else text
        return ({"id": "cam0", "type": "camera", "device": device},
                "a V4L2 camera; reconnects with backoff when unplugged (DEGRADED until it delivers again)")
    if re.match(r"(rtsp|rtsps|http|https)://", text):
        return ({"id": "stream0", "type": "rtsp", "url": text},
                "a network stream; a frozen server blocks a read for at most read_timeout_ms (2000)")
    if re.match(r"(tcp|ipc)://", text):
        return ({"id": "robot", "type": "zmq", "endpoint": text},
                "frames pushed over ZeroMQ (wire format v1 or v2, or imagezmq: see docs/zmq.md)")
    if text.startswith("ros2:"):
        return ({"id": "cam", "type": "ros2", "topic": text.removeprefix("ros2:")},
                "a sensor_msgs/Image topic (reliable QoS; `qos: {preset: sensor_data}` for a best-effort camera)")
    if "appsink" in text:
        return ({"id": "cam0", "type": "gstreamer", "pipeline": text},
                "a GStreamer pipeline (needs OpenCV built with GStreamer: `edgeinfer doctor`)")
    path = Path(text).expanduser()
    if path.is_dir():
        return ({"id": "images", "type": "images", "path": os.path.abspath(path)},
                "every image in the folder, sorted by name")
    if path.is_file() or path.suffix.lower() in VIDEO_SUFFIXES:
        if not path.is_file():
            raise InitError(f"--source {spec}: no such file")
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"):
            return ({"id": "images", "type": "images", "path": os.path.abspath(path.parent), "pattern": path.name},
                    "one image")
        return ({"id": _identifier(path.stem), "type": "video", "path": os.path.abspath(path), "realtime": False},
                "a video file, every frame in order (realtime: true paces it like a camera; loop: true repeats it)")
    raise InitError(f"--source {spec}: not a file, folder, camera (0, /dev/video0), URL (rtsp://, http://), "
                    "ZeroMQ endpoint (tcp://, ipc://), ROS topic (ros2:/camera/image_raw), GStreamer pipeline "
                    "(... ! appsink) or 'synthetic'")


def output_entry(kind: str) -> tuple[dict[str, Any], str]:
    if kind == "jsonl":
        return {"type": "jsonl", "path": "-"}, ("JSON Lines on stdout; for a file: path: /var/log/edgeinfer/"
                                                 "records.jsonl, rotate: {max_bytes: 100000000, keep: 3}")
    if kind == "zmq":
        return ({"type": "zmq", "endpoint": "tcp://127.0.0.1:5560", "control_endpoint": "tcp://127.0.0.1:5561"},
                "records on a PUB socket, commands (ping, status, reset) on REP; loopback only: see docs/zmq.md "
                "for CURVE before opening it to a network")
    if kind == "ros2":
        return ({"type": "ros2"}, "vision_msgs on ~/<model>/detections, heartbeat, /diagnostics, ~/reset "
                "(docs/ros2.md)")
    raise InitError(f"--output {kind}: allowed values: {', '.join(OUTPUT_KINDS)}")


def _identifier(text: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_\-]", "_", text)
    return ident if ident[:1].isalpha() else f"m_{ident}"


# -- the model entry -------------------------------------------------------------------------------------------


@dataclass
class ModelProposal:
    entry: dict[str, Any]
    comments: dict[str, str]  # key -> why
    decoder_candidates: list[dict[str, Any] | None]  # tried in order; None = leave it to the model's metadata


def propose_model(facts: ModelFacts, source_id: str, model_id: str | None = None) -> ModelProposal:
    entry: dict[str, Any] = {"id": model_id or _identifier(facts.path.stem), "path": os.path.abspath(facts.path),
                             "sources": [source_id]}
    comments: dict[str, str] = {}
    meta = facts.metadata
    if facts.is_engine:
        comments["path"] = ("a TensorRT engine: set preprocess and decoder as for the ONNX it was built from; "
                            "fallback: [{path: MODEL.onnx, backend: onnxruntime}] keeps it running elsewhere")
        return ModelProposal(entry, comments, [None])

    labels = _labels_beside(facts.path)
    if "names" in meta or "character" in meta:
        comments["id"] = f"class names from the model's metadata ({'names' if 'names' in meta else 'character'})"
    elif labels is not None:
        entry["labels"] = str(labels)
        comments["labels"] = "one class name per line, found beside the model"

    image = next((t for t in facts.inputs if len(t.shape) == 4), None)
    outputs = facts.outputs
    classifier = len(outputs) == 1 and len(outputs[0].shape) == 2
    dense = len(outputs) == 1 and len(outputs[0].shape) == 4
    preprocess: dict[str, Any] = {}
    if facts.edgeinfer_darknet:
        preprocess = {"resize": "stretch", "color": "rgb", "scale": 1 / 255}
        comments["preprocess"] = "darknet's own preprocessing (from the converter's metadata): plain resize, RGB, 1/255"
    elif facts.ultralytics:
        comments["preprocess"] = "Ultralytics defaults apply (letterbox, RGB, 1/255): nothing to set"
    elif classifier or dense:
        preprocess = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        comments["preprocess"] = ("ImageNet normalisation, what most classifiers and dense models are trained "
                                  "with: check your model's training recipe")
    else:
        comments["preprocess"] = "defaults: letterbox, RGB, 1/255 (YOLO-style); change if your model differs"
    if image is not None and (image.shape[2] is None or image.shape[3] is None) and "imgsz" not in meta:
        preprocess["size"] = [640, 640]
        comments["preprocess"] += "; size: the input's height/width are open: set the size it was trained at"
    if preprocess:
        entry["preprocess"] = preprocess

    candidates: list[dict[str, Any] | None]
    if meta.get("task"):
        candidates = [None]
        comments["sources"] = f"decoder chosen from the model's metadata (task {meta['task']})"
    elif facts.edgeinfer_darknet and meta.get("layout") == "yolo-v5":
        candidates = [{"type": "yolo", "layout": "v5"}]
    elif classifier:
        candidates = [{"type": "classify", "top_k": 5}]
    elif dense:
        channels = outputs[0].shape[1]
        task = "segmentation" if channels and channels > 1 else "saliency"
        candidates = [{"type": "dense", "task": task}]
        if task == "saliency":
            comments["decoder"] = "one-channel map: saliency, or task: depth for a depth model"
    elif len(outputs) >= 2:
        candidates = [{"type": "detr"}, {"type": "yolo"}]
    else:
        candidates = [{"type": "yolo"}, *({"type": "yolo", "layout": layout} for layout in ("v8", "v5", "v10")),
                      {"type": "detr"}]
    return ModelProposal(entry, comments, candidates)


def _labels_beside(model_path: Path) -> Path | None:
    folder = Path(os.path.abspath(model_path)).parent
    for name in LABEL_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted([*folder.glob("*.names"), *folder.glob("*.labels")])
    return found[0] if found else None


# -- putting it together ---------------------------------------------------------------------------------------


@dataclass
class InitResult:
    text: str  # the commented YAML
    problems: list[str]  # what `check` would refuse (empty: it passes)
    notes: list[str]  # what was read from the model, and the decoder chosen


def make_config(model: str, source: str, output: str = "jsonl", model_id: str | None = None,
                fit: bool = True) -> InitResult:
    """The config for `model` reading `source` into `output`, fitted (with `fit`) as `check` does."""
    model_path = Path(model).expanduser()
    if not model_path.is_file():
        raise InitError(f"MODEL {model}: no such file")
    facts = read_model(model_path)
    src, src_comment = source_entry(source)
    out, out_comment = output_entry(output)
    proposal = propose_model(facts, src["id"], model_id)
    problems: list[str] = []
    notes: list[str] = []
    chosen: dict[str, Any] | None = proposal.decoder_candidates[0]
    if fit and not facts.is_engine:
        first: tuple[list[str], list[str]] | None = None
        for candidate in proposal.decoder_candidates:
            problems, notes = _fit(proposal.entry, candidate, src, out)
            first = first or (problems, notes)
            if not problems:
                chosen = candidate
                break
        else:  # none fits: report the problems of the first (most likely) reading
            problems, notes = first  # type: ignore[misc]
    entry = dict(proposal.entry)
    if chosen is not None:
        entry["decoder"] = chosen
        if "decoder" not in proposal.comments:
            proposal.comments["decoder"] = _decoder_comment(chosen, notes)
    text = render(model_path, source, src, src_comment, entry, proposal.comments, out, out_comment, notes)
    return InitResult(text, problems, notes)


def _decoder_comment(decoder: dict[str, Any], notes: list[str]) -> str:
    chosen = next((n.removeprefix("decoder: ") for n in notes if n.startswith("decoder: ")), None)
    return f"fits the model's outputs: {chosen}" if chosen else "from the output shapes"


def _fit(entry: dict[str, Any], decoder: dict[str, Any] | None, source: dict, output: dict
         ) -> tuple[list[str], list[str]]:
    """Load and fit the model as `check` does; (problems, notes)."""
    model = dict(entry) if decoder is None else {**entry, "decoder": decoder}
    data = {"sources": [source], "models": [model], "outputs": [output]}
    try:
        parsed = parse_config(yaml.safe_dump(data, sort_keys=False), source="edgeinfer init")
    except ConfigError as exc:
        return [str(p) for p in exc.problems if p.fatal], []
    notes: list[tuple[int, str]] = []
    problems = check_models(parsed, notes)
    return [message for _, message in problems], [note for _, note in notes]


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.strip().removesuffix("...").strip()


def _block(entry: dict[str, Any], comments: dict[str, str], indent: str) -> list[str]:
    lines = []
    first = True
    for key, value in entry.items():
        prefix = indent[:-2] + "- " if first else indent
        first = False
        line = f"{prefix}{key}: {_scalar(value)}"
        comment = comments.get(key)
        if comment and len(line) + len(comment) + 4 <= 118:
            line += f"  # {comment}"
        elif comment:  # too long for the line: above it
            lines += [f"{indent}# {part}" for part in textwrap.wrap(comment, 110 - len(indent))]
        lines.append(line)
    return lines


def render(model_path: Path, source_text: str, source: dict, source_comment: str, model: dict,
           model_comments: dict[str, str], output: dict, output_comment: str, notes: list[str]) -> str:
    lines = [f"# Written by `edgeinfer init {model_path.name} --source {source_text} --output {output['type']}`.",
             "# Check it with `edgeinfer check FILE`, run it with `edgeinfer run FILE`. Paths are absolute, so the",
             "# file works wherever it is saved. Every key: docs/config.md.",
             "sources:",
             *[f"  # {part}" for part in textwrap.wrap(source_comment, 110)],
             *_block(source, {}, "    "),
             "",
             "models:"]
    if notes:
        lines.append("  # read from the model and fitted as `check` does:")
        lines += [f"  #   {note}" for note in notes]
    lines += [*_block(model, model_comments, "    "),
              "    # budget_ms: 2000          # the deadline of one inference (watchdog)",
              "    # device: auto             # cpu, gpu, dla0 (a TensorRT engine built for that DLA core)",
              "",
              "outputs:",
              *[f"  # {part}" for part in textwrap.wrap(output_comment, 110)],
              *_block(output, {}, "    "),
              "",
              "# watchdog:                   # defaults: docs/watchdog.md",
              "#   safety_relevant: []      # entity ids whose loss is a SAFE_STOP (default: every model)",
              ""]
    return "\n".join(lines)
