"""Wire format v1 for frames sent to edgeinfer over ZeroMQ, and imagezmq's format: pure functions, no sockets.

A message is two frames, `[header, payload]`:

- header: a UTF-8 JSON object, at most `MAX_HEADER_BYTES`:
  `{"v": 1, "encoding": "bgr8", "width": 640, "height": 480, "step": 1920, "seq": 7, "stamp": 1764547200.25,
  "source": "front", "frame_id": "camera_front"}` (only `v` and `encoding` always; `width`/`height` for raw
  encodings; see docs/zmq.md);
- payload: the pixels (`bgr8`, `rgb8`, `mono8`, rows `step` bytes apart) or a whole JPEG / PNG file.

`parse_message` checks a message cheaply (no pixel work), so a source can look at every message while it
drains to the newest; `decode_image` turns the one it keeps into an image (raw payloads are a view over the
received buffer, no copy). `decode_message` does both; the fuzz test feeds it arbitrary parts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ...imageheader import declared_size

VERSION = 1
MAX_HEADER_BYTES = 4096
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
RAW_CHANNELS = {"bgr8": 3, "rgb8": 3, "mono8": 1}
COMPRESSED = ("jpeg", "png")
ENCODINGS = (*RAW_CHANNELS, *COMPRESSED)
MAX_SIDE = 65_535  # JPEG's own limit; larger claims are nonsense, not big images
# A compressed frame may declare at most this many pixels (sources[].max_pixels): 4096 x 3072 is a 12.6 MP
# camera, 38 MB once decoded to BGR. Checked in the header before decoding (imageheader.py).
DEFAULT_MAX_PIXELS = 4096 * 3072

# Why a message was dropped; these keys appear in the source's stats and the heartbeat.
REASONS = ("parts", "header", "version", "encoding", "size", "too_large", "corrupt")


class Malformed(Exception):
    """A message that cannot be a frame. `reason` is one of REASONS; the text says what exactly."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(slots=True)
class Parsed:
    """A message that passed every check but the pixel decode."""

    encoding: str
    width: int
    height: int
    step: int
    payload: Any  # a buffer (bytes, memoryview, zmq.Frame's buffer)
    seq: int | None = None
    stamp: float | None = None
    frame_id: str | None = None
    source: str | None = None


def _buffer(part: Any) -> memoryview:
    # zmq.Frame (copy=False) exposes .buffer; bytes and memoryview are buffers already
    buf = getattr(part, "buffer", part)
    try:
        view = memoryview(buf)
    except TypeError:
        raise Malformed("parts", f"message part is {type(part).__name__}, not bytes") from None
    if view.format == "B" and view.ndim == 1:
        return view
    try:
        return view.cast("B")
    except TypeError:  # a non-contiguous buffer
        raise Malformed("parts", "message part is not a contiguous buffer") from None


# The C scanner behind json.loads, called directly for a UTF-8 header: json.loads(bytes) first runs
# detect_encoding, decode and raw_decode with two whitespace regexes in Python, which a receiver woken for each
# frame pays with cold caches (docs/zmq.md). Anything the scanner does not take whole goes to json.loads.
_SCAN = json.JSONDecoder().scan_once


def _header_json(part: Any) -> dict:
    raw = part if type(part) is bytes else _buffer(part).tobytes()
    if len(raw) > MAX_HEADER_BYTES:
        raise Malformed("header", f"header is {len(raw)} bytes; the limit is {MAX_HEADER_BYTES}")
    if len(raw) == 0:
        raise Malformed("header", "header frame is empty")
    try:
        text = raw.decode()
        header, end = _SCAN(text, 0)
        if end != len(text):
            raise ValueError("not one JSON value alone")
    except (UnicodeDecodeError, ValueError, StopIteration, RecursionError):
        header = None
    if header is None:
        try:
            header = json.loads(raw)  # the full parser: other encodings, surrounding whitespace, its error text
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise Malformed("header", f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise Malformed("header", f"header must be a JSON object, got {type(header).__name__}")
    return header


def _int(header: dict, key: str, default: int | None, low: int, high: int) -> int | None:
    if key not in header:
        return default
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Malformed("header", f"header field {key!r} must be an integer in {low}..{high}, got {value!r:.40}")
    return value


def _check_size(payload: memoryview, max_bytes: int) -> None:
    if len(payload) > max_bytes:
        raise Malformed("too_large", f"payload is {len(payload)} bytes; the limit (max_bytes) is {max_bytes}")


def parse_message(parts: list[Any] | tuple[Any, ...], max_bytes: int = DEFAULT_MAX_BYTES) -> Parsed:
    """Check one edgeinfer v1 message; raises Malformed. Cheap: no pixel work."""
    if len(parts) != 2:
        raise Malformed("parts", f"expected 2 message parts [header, payload], got {len(parts)}")
    header = _header_json(parts[0])
    version = header.get("v")
    if version != VERSION or isinstance(version, bool):
        raise Malformed("version", f"header 'v' is {version!r:.40}; this daemon speaks version {VERSION}")
    encoding = header.get("encoding")
    if encoding not in ENCODINGS:
        raise Malformed("encoding", f"encoding {encoding!r:.40} is not one of {', '.join(ENCODINGS)}")
    payload = _buffer(parts[1])
    _check_size(payload, max_bytes)
    seq = _int(header, "seq", None, 0, 2**63 - 1)
    stamp = header.get("stamp")
    if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, (int, float))
                              or not math.isfinite(stamp) or stamp < 0):
        raise Malformed("header", f"header field 'stamp' must be seconds since the epoch, got {stamp!r:.40}")
    texts = {}
    for key in ("frame_id", "source"):
        value = header.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 256):
            raise Malformed("header", f"header field {key!r} must be a string of at most 256 characters")
        texts[key] = value or None
    if encoding in RAW_CHANNELS:
        width = _int(header, "width", None, 1, MAX_SIDE)
        height = _int(header, "height", None, 1, MAX_SIDE)
        if width is None or height is None:
            raise Malformed("header", f"encoding {encoding} needs 'width' and 'height' in the header")
        row = width * RAW_CHANNELS[encoding]
        step = _int(header, "step", row, row, 16 * row)
        if len(payload) != height * step:
            raise Malformed("size", f"payload is {len(payload)} bytes; {encoding} {width}x{height} with step "
                                    f"{step} needs {height * step}")
    else:
        width = _int(header, "width", 0, 0, MAX_SIDE)
        height = _int(header, "height", 0, 0, MAX_SIDE)
        if bool(width) != bool(height):
            raise Malformed("header", f"{encoding}: give both 'width' and 'height' (they are checked) or neither")
        step = 0
        if len(payload) == 0:
            raise Malformed("size", f"{encoding} payload is empty")
    return Parsed(encoding, width, height, step, payload, seq,
                  float(stamp) if stamp is not None else None, texts["frame_id"], texts["source"])


def parse_imagezmq(parts: list[Any] | tuple[Any, ...], max_bytes: int = DEFAULT_MAX_BYTES) -> Parsed:
    """Check one message from imagezmq's `send_image` (`{"msg", "dtype", "shape"}` + array bytes) or
    `send_jpg` (`{"msg"}` + a JPEG). imagezmq images are OpenCV's BGR."""
    if len(parts) != 2:
        raise Malformed("parts", f"expected 2 message parts [metadata, data] (imagezmq), got {len(parts)}")
    header = _header_json(parts[0])
    payload = _buffer(parts[1])
    _check_size(payload, max_bytes)
    msg = header.get("msg")
    source = msg if isinstance(msg, str) and len(msg) <= 256 else None
    if "shape" not in header and "dtype" not in header:
        if len(payload) == 0:
            raise Malformed("size", "jpg payload is empty")
        return Parsed("jpeg", 0, 0, 0, payload, source=source)  # imdecode takes PNG as well
    if header.get("dtype") != "uint8":
        raise Malformed("encoding", f"imagezmq dtype {header.get('dtype')!r:.40} is not supported (need uint8)")
    shape = header.get("shape")
    if (not isinstance(shape, list) or len(shape) not in (2, 3)
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_SIDE for s in shape)
            or (len(shape) == 3 and shape[2] not in (1, 3))):
        raise Malformed("header", f"imagezmq shape {shape!r:.60} is not [height, width] or [height, width, 1|3]")
    height, width = shape[0], shape[1]
    channels = shape[2] if len(shape) == 3 else 1
    if len(payload) != height * width * channels:
        raise Malformed("size", f"payload is {len(payload)} bytes; shape {shape} needs {height * width * channels}")
    return Parsed("bgr8" if channels == 3 else "mono8", width, height, width * channels, payload, source=source)


def decode_image(parsed: Parsed, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The pixels of a parsed message: BGR (or H x W for mono8), uint8. Raw encodings are a read-only view
    over the received buffer (no copy) except rgb8, which is converted. A PNG or JPEG is decoded only when
    its header declares at most `max_pixels` (else Malformed("too_large"), nothing allocated). Raises
    Malformed."""
    if parsed.encoding in RAW_CHANNELS:
        channels = RAW_CHANNELS[parsed.encoding]
        # one array over the buffer, rows `step` bytes apart (padded rows stay a strided view, no copy); the
        # parse checked that the payload is height x step bytes. Read-only: the frame is shared by every model
        # and output (frame.py), and ZeroMQ's buffer would otherwise be writable through it
        if channels == 1:
            image = np.ndarray((parsed.height, parsed.width), np.uint8, parsed.payload, 0, (parsed.step, 1))
        else:
            image = np.ndarray((parsed.height, parsed.width, channels), np.uint8, parsed.payload, 0,
                               (parsed.step, channels, 1))
            if parsed.encoding == "rgb8":
                return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        image.flags.writeable = False
        return image
    data = np.frombuffer(parsed.payload, np.uint8)
    size = declared_size(data.data)
    if size is None:
        raise Malformed("corrupt", f"{parsed.encoding} payload ({len(data)} bytes) has no PNG or JPEG header")
    if size[0] * size[1] > max_pixels:
        raise Malformed("too_large", f"{parsed.encoding} declares {size[0]}x{size[1]} pixels, over the limit of "
                                     f"{max_pixels} (sources[].max_pixels); not decoded")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise Malformed("corrupt", f"{parsed.encoding} payload does not decode: {str(exc).strip()[:120]}") from None
    if image is None:
        raise Malformed("corrupt", f"{parsed.encoding} payload ({len(data)} bytes) does not decode as an image")
    if parsed.width and parsed.height and (image.shape[1], image.shape[0]) != (parsed.width, parsed.height):
        raise Malformed("size", f"{parsed.encoding} decodes to {image.shape[1]}x{image.shape[0]}, header says "
                                f"{parsed.width}x{parsed.height}")
    return image


def decode_message(parts: list[Any] | tuple[Any, ...], max_bytes: int = DEFAULT_MAX_BYTES,
                   protocol: str = "edgeinfer", max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Parsed, np.ndarray]:
    """parse + decode in one call; raises Malformed and nothing else for any input."""
    parsed = parse_imagezmq(parts, max_bytes) if protocol == "imagezmq" else parse_message(parts, max_bytes)
    return parsed, decode_image(parsed, max_pixels)


def encode_header(encoding: str, width: int = 0, height: int = 0, step: int | None = None, seq: int | None = None,
                  stamp: float | None = None, source: str | None = None, frame_id: str | None = None) -> bytes:
    """The header frame for one message (what a sender puts before the payload)."""
    header: dict[str, Any] = {"v": VERSION, "encoding": encoding}
    if width or height:
        header["width"], header["height"] = width, height
    if step is not None:
        header["step"] = step
    if seq is not None:
        header["seq"] = seq
    if stamp is not None:
        header["stamp"] = stamp
    if source:
        header["source"] = source
    if frame_id:
        header["frame_id"] = frame_id
    return json.dumps(header, separators=(",", ":")).encode()


def header_for_image(image: np.ndarray, encoding: str = "bgr8", **fields: Any) -> bytes:
    """The header for a raw image array (H x W x 3 for bgr8/rgb8, H x W for mono8), row step from its strides."""
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    channels = RAW_CHANNELS[encoding]
    if (channels == 1 and image.ndim != 2) or (channels == 3 and (image.ndim != 3 or image.shape[2] != 3)):
        raise ValueError(f"image of shape {image.shape} is not {encoding}")
    if not image.flags.c_contiguous:
        raise ValueError("image must be C-contiguous (np.ascontiguousarray)")
    height, width = image.shape[:2]
    return encode_header(encoding, width, height, width * channels, **fields)
