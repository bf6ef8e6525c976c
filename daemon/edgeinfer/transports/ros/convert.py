"""Message contents as pure functions (numpy and OpenCV only): image messages to BGR arrays and back, stamps,
detections, the heartbeat and the diagnostics. The ROS plugins copy these values into messages; the tests
check them without ROS."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

# sensor_msgs/Image encodings the source accepts: channels and the conversion to BGR (None: already BGR)
RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "bgr8": (3, None),
    "rgb8": (3, cv2.COLOR_RGB2BGR),
    "mono8": (1, cv2.COLOR_GRAY2BGR),
    "8uc1": (1, cv2.COLOR_GRAY2BGR),
    "bgra8": (4, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, cv2.COLOR_RGBA2BGR),
    "8uc3": (3, None),
}
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
MAX_PIXELS = 8192 * 8192  # larger claims are taken as a corrupt header, not an allocation to make


def image_to_bgr(encoding: str, height: int, width: int, step: int, data: Any) -> np.ndarray:
    """sensor_msgs/Image fields -> H x W x 3 uint8 BGR (a copy: the message buffer is not kept).
    Raises ValueError naming what is wrong (unsupported encoding, sizes that do not fit the data)."""
    key = encoding.lower()
    if key not in RAW_ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}; supported: {', '.join(RAW_ENCODINGS)}")
    channels, conversion = RAW_ENCODINGS[key]
    if height <= 0 or width <= 0 or height * width > MAX_PIXELS:
        raise ValueError(f"bad image size {width}x{height}")
    row = width * channels
    if step < row:
        raise ValueError(f"step {step} is smaller than width x channels = {row}")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < step * (height - 1) + row:
        raise ValueError(f"{buf.size} data bytes for a {width}x{height} {encoding} image with step {step} "
                         f"(need {step * height})")
    # rows may be padded (step > width * channels): view them with the step, then drop the padding
    image = np.lib.stride_tricks.as_strided(buf, shape=(height, width, channels), strides=(step, channels, 1))
    if conversion is None:
        return image.copy()  # C-contiguous, padding dropped, independent of the message buffer
    return cv2.cvtColor(np.ascontiguousarray(image), conversion)


def compressed_to_bgr(fmt: str, data: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png) -> BGR. `format` may be 'jpeg', 'png' or image_transport's
    'rgb8; jpeg compressed bgr8' form."""
    lowered = fmt.lower()
    if lowered and not any(f in lowered for f in COMPRESSED_FORMATS):
        raise ValueError(f"unsupported compressed format {fmt!r}; supported: jpeg, png")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ValueError("empty compressed image")
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode {buf.size} bytes as {fmt or 'an image'}")
    return image


def bgr_to_image_fields(image: np.ndarray) -> tuple[int, int, str, int, bytes]:
    """(height, width, encoding, step, data) of a BGR array as sensor_msgs/Image."""
    height, width = image.shape[:2]
    return height, width, "bgr8", width * 3, np.ascontiguousarray(image).tobytes()


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def ros_name(entity_id: str) -> str:
    """An edgeinfer id as a ROS name token: ROS names allow no '-', so it becomes '_' (yolov3-tiny ->
    yolov3_tiny)."""
    return entity_id.replace("-", "_")


def stamp_to_seconds(sec: int, nanosec: int) -> float | None:
    """A header stamp as wall-clock seconds; None for an unset (zero) stamp."""
    if sec == 0 and nanosec == 0:
        return None
    return sec + nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> tuple[int, int]:
    """Wall-clock seconds -> (sec, nanosec). A float64 stamp near 1.8e9 s resolves ~0.24 us, so a stamp that
    came from a message comes back within 1 us of the original."""
    ns = round(seconds * 1e9)
    return ns // 1_000_000_000, ns % 1_000_000_000


def detection_values(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """(center x, center y, size x, size y) of an x1, y1, x2, y2 box: vision_msgs/BoundingBox2D."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1


def class_id_text(class_id: int, label: str, label_in_class_id: bool) -> str:
    """vision_msgs carries class ids as strings: the class number (names via LabelInfo), or the label."""
    return label if label_in_class_id else str(int(class_id))


def classification_values(classifications: Iterable[Any], label_in_class_id: bool) -> list[tuple[str, float]]:
    """(class_id text, score) per ranked class: the results[] of vision_msgs/Classification (ObjectHypothesis),
    best first, as the decoder ranked them (top-k after its threshold)."""
    return [(class_id_text(c.class_id, c.label, label_in_class_id), float(c.score)) for c in classifications]


# sensor_msgs/Image of a dense map: (encoding, element type) per task; the map's own dtype picks for segmentation
_LITTLE_ENDIAN = sys.byteorder == "little"


def dense_image_fields(task: str, values: np.ndarray) -> tuple[int, int, str, int, int, memoryview]:
    """(height, width, encoding, is_bigendian, step, data) of a dense map in source pixels as sensor_msgs/Image:
    segmentation class ids as mono8 (mono16 where an id exceeds 255), saliency and depth as 32FC1 (float32,
    the values as the model gave them). `data` is a view of the map's bytes, not a copy: the caller copies it
    once into the message. Raises ValueError for a map that is not 2-D or a task it does not know."""
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"a dense map is [height, width], got shape {values.shape}")
    if task == "segmentation":
        if values.dtype == np.uint8:
            encoding = "mono8"
        elif values.dtype == np.uint16:
            encoding = "mono16"
        elif np.issubdtype(values.dtype, np.integer) and values.min(initial=0) >= 0:
            wide = values.max(initial=0) > 255
            values = values.astype(np.uint16 if wide else np.uint8)
            encoding = "mono16" if wide else "mono8"
        else:
            raise ValueError(f"segmentation map of {values.dtype}: expected class ids (unsigned integers)")
    elif task in ("saliency", "depth"):
        encoding = "32FC1"
        values = values.astype(np.float32, copy=False)
    else:
        raise ValueError(f"unknown dense task {task!r}; known: segmentation, saliency, depth")
    if values.dtype.itemsize > 1 and values.dtype.byteorder not in ("=", "|", "<" if _LITTLE_ENDIAN else ">"):
        values = values.astype(values.dtype.newbyteorder("="))
    values = np.ascontiguousarray(values)
    height, width = values.shape
    big_endian = int(values.dtype.itemsize > 1 and not _LITTLE_ENDIAN)
    return height, width, encoding, big_endian, width * values.dtype.itemsize, memoryview(values).cast("B")


def image_fields_to_array(encoding: str, height: int, width: int, step: int, is_bigendian: int,
                          data: Any) -> np.ndarray:
    """The inverse for the single-channel encodings above (mono8, mono16, 32FC1): a [height, width] array.
    For subscribers and tests; raises ValueError when the sizes do not fit the data."""
    types = {"mono8": np.uint8, "8uc1": np.uint8, "mono16": np.uint16, "16uc1": np.uint16, "32fc1": np.float32}
    key = encoding.lower()
    if key not in types:
        raise ValueError(f"unsupported encoding {encoding!r}; supported: mono8, mono16, 32FC1")
    dtype = np.dtype(types[key]).newbyteorder(">" if is_bigendian else "<")
    row = width * dtype.itemsize
    buf = np.frombuffer(data, dtype=np.uint8)
    if height <= 0 or width <= 0 or step < row or buf.size < step * (height - 1) + row:
        raise ValueError(f"{buf.size} data bytes do not hold a {width}x{height} {encoding} image with step {step}")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row), strides=(step, 1))
    return np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(dtype.newbyteorder("="))


HEARTBEAT_STATES = {"OK": 0, "DEGRADED": 1, "FAULT": 2, "SAFE_STOP": 3}


def heartbeat_values(body: dict[str, Any]) -> dict[str, Any]:
    """The supervisor's heartbeat dict -> the fields of edgeinfer_msgs/Heartbeat (plain values)."""
    ages = body.get("frame_age_ms") or {}
    fps = body.get("fps") or {}
    newest = body.get("newest_frame_age_ms")
    entities = []
    for entity_id, e in (body.get("entities") or {}).items():
        last = e.get("last_alive_cycle")
        entities.append({
            "id": str(entity_id),
            "kind": str(e.get("kind", "")),
            "status": str(e.get("status", "")),
            "safety_relevant": bool(e.get("safety_relevant", False)),
            "latched": bool(e.get("latched", False)),
            "faults": int(e.get("faults") or 0),
            "violations": int(e.get("violations") or 0),
            "last_alive_cycle": -1 if last is None else int(last),
            "last_fault": str(e.get("last_fault") or ""),
        })
    state = str(body.get("state", ""))
    return {
        "stamp": float(body.get("stamp") or 0.0),
        "cycle": int(body.get("cycle") or 0),
        "state": HEARTBEAT_STATES.get(state, 255),
        "state_name": state,
        "entities": entities,
        "actions": [str(a) for a in body.get("actions") or []],
        "newest_frame_age_ms": math.nan if newest is None else float(newest),
        "frame_age_sources": [str(k) for k in ages],
        "frame_age_ms": [float(v) for v in ages.values()],
        "fps_models": [str(k) for k in fps],
        "fps": [float(v) for v in fps.values()],
    }


# diagnostic_msgs/DiagnosticStatus levels
OK, WARN, ERROR, STALE = 0, 1, 2, 3
STATE_LEVELS = {"OK": OK, "DEGRADED": WARN, "FAULT": ERROR, "SAFE_STOP": ERROR}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def diagnostic_statuses(prefix: str, heartbeat: dict[str, Any] | None, stats: dict[str, Any],
                        backends: dict[str, tuple[str, str]], qos_events: Iterable[str], publishing: bool
                        ) -> list[tuple[str, int, str, list[tuple[str, str]]]]:
    """(name, level, message, [(key, value)]) for /diagnostics: the watchdog, every model (fps, latency,
    drops, backend and device), every source, and the ROS output's QoS problems."""
    out = []
    if heartbeat is None:
        out.append((f"{prefix}: watchdog", STALE, "no supervision cycle yet", []))
    else:
        state = str(heartbeat.get("state"))
        not_ok = [f"{k} {e.get('status')}" for k, e in (heartbeat.get("entities") or {}).items()
                  if e.get("status") != "OK"]
        out.append((f"{prefix}: watchdog", STATE_LEVELS.get(state, ERROR), state + (": " + ", ".join(not_ok)
                    if not_ok else ""), [("state", state), ("cycle", _fmt(heartbeat.get("cycle"))),
                                         ("newest_frame_age_ms", _fmt(heartbeat.get("newest_frame_age_ms"))),
                                         ("actions", ",".join(heartbeat.get("actions") or []))]))
    for model_id, m in (stats.get("models") or {}).items():
        drops = sum((m.get("drops") or {}).values())
        errors = int(m.get("infer_errors", 0)) + int(m.get("decode_errors", 0))
        backend, device = backends.get(model_id, ("", "auto"))
        if device == "auto":  # the backend chose: say where it runs
            device = "gpu" if any(k in backend for k in ("CUDA", "Tensorrt", "tensorrt", "cuda")) else "cpu"
        level = ERROR if errors and not m.get("published") else (WARN if errors else OK)
        out.append((f"{prefix}: model {model_id}", level, f"{_fmt(m.get('fps'))} fps", [
            ("fps", _fmt(float(m.get("fps", 0.0)))),
            ("infer_ms", _fmt(float(m.get("last_infer_ms", 0.0)))),
            ("latency_ms", _fmt(float(m.get("last_age_ms", 0.0)))),
            ("published", _fmt(m.get("published"))),
            ("drops", _fmt(drops)),
            ("stale_dropped", _fmt(m.get("stale_dropped"))),
            ("bad_frames", _fmt(m.get("bad_frames"))),
            ("errors", _fmt(errors)),
            ("backend", backend),
            ("device", device),
        ]))
    for source_id, s in (stats.get("sources") or {}).items():
        state = str(s.get("state"))
        level = OK if state == "running" else (WARN if state in ("starting", "reconnecting") else ERROR)
        values = [("fps", _fmt(float(s.get("fps", 0.0)))), ("frames", _fmt(s.get("frames"))),
                  ("bad_frames", _fmt(s.get("bad_frames"))), ("reconnects", _fmt(s.get("reconnects")))]
        if "overwritten" in s:
            values.append(("drops", _fmt(s.get("overwritten"))))
        if "lost" in s:  # a ROS source: always present (a monitor reads it), 0 included
            values.append(("lost_in_transport", _fmt(s.get("lost"))))
            if s.get("lost"):  # messages the middleware reports lost in transport
                level = max(level, WARN)
        if s.get("last_error"):
            values.append(("last_error", str(s["last_error"])))
        message = state
        if s.get("qos_events"):  # a ROS source whose publisher does not offer what it requests
            level = max(level, WARN)
            message = f"{state}; {s['qos_events'][-1]}"
            values.append(("incompatible_qos", str(s["qos_events"][-1])))
        out.append((f"{prefix}: source {source_id}", level, message, values))
    events = list(qos_events)
    message = "; ".join(events[-3:]) if events else ("publishing" if publishing else "inactive (lifecycle)")
    out.append((f"{prefix}: ros2", WARN if events else OK, message,
                [("incompatible_qos_events", str(len(events))), ("publishing", str(publishing).lower())]))
    return out


def draw_detections(image: np.ndarray, detections: Iterable[Any]) -> np.ndarray:
    """A copy of the frame with each box and its label and score drawn on it; where a detection has them, its
    mask tinted in, its keypoints (confidence > 0.5) as dots and its track id in the label."""
    out = image.copy()
    for d in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in d.bbox)
        colour = _colour(int(d.class_id))
        mask = getattr(d, "mask", None)
        if mask is not None and mask.crop.size:
            h, w = mask.crop.shape
            region = out[mask.y0:mask.y0 + h, mask.x0:mask.x0 + w]
            inside = mask.crop[:region.shape[0], :region.shape[1]]
            region[inside] = (region[inside] * 0.5 + np.array(colour) * 0.5).astype(np.uint8)
        keypoints = getattr(d, "keypoints", None)
        if keypoints is not None:
            for kx, ky, kc in keypoints.tolist():
                if kc > 0.5:
                    cv2.circle(out, (int(round(kx)), int(round(ky))), 3, colour, -1, cv2.LINE_AA)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        track_id = getattr(d, "track_id", None)
        text = f"{d.label} {float(d.score):.2f}" + (f" #{track_id}" if track_id is not None else "")
        cv2.putText(out, text, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return out


def _colour(class_id: int) -> tuple[int, int, int]:
    # a fixed, well-spread colour per class (golden-ratio hue steps)
    hue = int((class_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.uint8([[[hue, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)
