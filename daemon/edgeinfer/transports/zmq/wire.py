"""Wire formats v1 and v2 for frames sent to edgeinfer over ZeroMQ, and imagezmq's format: pure functions, no
sockets.

A message is two frames, `[header, payload]`:

- header, v1: a UTF-8 JSON object, at most `MAX_HEADER_BYTES`:
  `{"v": 1, "encoding": "bgr8", "width": 640, "height": 480, "step": 1920, "seq": 7, "stamp": 1764547200.25,
  "source": "front", "frame_id": "camera_front"}` (only `v` and `encoding` always; `width`/`height` for raw
  encodings; see docs/zmq.md);
- header, v2: the same fields in a fixed 32-byte little-endian struct (`V2_HEADER`) that starts with the magic
  `EIF\x02`, then the frame_id and source texts. A receiver tells the two apart by the first bytes, so one
  socket takes both: the sender picks. v2 exists for latency: after 10 ms asleep, and with caches just flushed
  by a 921 kB frame, the JSON parse and its checks ran at 20-30x their warm cost (docs/zmq.md);
- payload: the pixels (`bgr8`, `rgb8`, `mono8`, rows `step` bytes apart) or a whole JPEG / PNG file.

`parse_message` checks a message cheaply (no pixel work), so a source can look at every message while it
drains to the newest; `decode_image` turns the one it keeps into an image (raw payloads are a view over the
received buffer, no copy). `decode_message` does both; the fuzz test feeds it arbitrary parts.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ...imageheader import declared_size

VERSION = 1  # the JSON header's `v`; the binary header (v2) carries its version in its magic
WIRE_VERSIONS = (1, 2)  # what parse_message takes (the control socket's ping lists them)
MAX_HEADER_BYTES = 4096
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
RAW_CHANNELS = {"bgr8": 3, "rgb8": 3, "mono8": 1}
COMPRESSED = ("jpeg", "png")
ENCODINGS = (*RAW_CHANNELS, *COMPRESSED)
MAX_SIDE = 65_535  # JPEG's own limit; larger claims are nonsense, not big images
# A compressed frame may declare at most this many pixels (sources[].max_pixels): 4096 x 3072 is a 12.6 MP
# camera, 38 MB once decoded to BGR. Checked in the header before decoding (imageheader.py).
DEFAULT_MAX_PIXELS = 4096 * 3072

# Wire format v2's header: magic, encoding (an index into V2_ENCODINGS), flags, width, height, the lengths of
# the frame_id and source texts that follow the 32 bytes, step (0: width x channels), seq, stamp.
V2_MAGIC = b"EIF\x02"
V2_HEADER = struct.Struct("<4sBBHHBBIQd")
V2_ENCODINGS = ("bgr8", "rgb8", "mono8", "jpeg", "png")
_V2_VIEW_CHANNELS = (3, 0, 1)  # bgr8 and mono8 are viewed as they are (rgb8: 0, it needs a conversion)
V2_HAS_SEQ = 1  # flags: which of seq and stamp the sender set (the other bits are reserved, sent as 0)
V2_HAS_STAMP = 2
MAX_SEQ = 2**63 - 1
MAX_TEXT = 255  # v2 text fields, in UTF-8 bytes

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
    image: np.ndarray | None = None  # set by the parse when the pixels cost nothing to view (raw v2 bgr8/mono8)


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
    """Check one edgeinfer message, v1 or v2; raises Malformed. Cheap: no pixel work."""
    if len(parts) != 2:
        raise Malformed("parts", f"expected 2 message parts [header, payload], got {len(parts)}")
    head = parts[0]
    if type(head) is not bytes:
        head = _buffer(head).tobytes()
    if head[:3] == V2_MAGIC[:3]:
        return _parse_v2(head, parts[1], max_bytes)
    header = _header_json(head)
    version = header.get("v")
    if version != VERSION or isinstance(version, bool):
        raise Malformed("version", f"header 'v' is {version!r:.40}; this daemon speaks version {VERSION} (JSON) "
                                   f"and 2 (binary)")
    encoding = header.get("encoding")
    if encoding not in ENCODINGS:
        raise Malformed("encoding", f"encoding {encoding!r:.40} is not one of {', '.join(ENCODINGS)}")
    payload = _buffer(parts[1])
    _check_size(payload, max_bytes)
    seq = _int(header, "seq", None, 0, MAX_SEQ)
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
        row = width * RAW_CHANNELS[encoding] if width is not None else 0
        step = _int(header, "step", row, row, 16 * row) if row else 0
    else:
        width = _int(header, "width", 0, 0, MAX_SIDE)
        height = _int(header, "height", 0, 0, MAX_SIDE)
        step = 0
    _check_geometry(encoding, width, height, step, payload)
    return Parsed(encoding, width, height, step, payload, seq,
                  float(stamp) if stamp is not None else None, texts["frame_id"], texts["source"])


def _check_geometry(encoding: str, width: int | None, height: int | None, step: int, payload: memoryview) -> None:
    if encoding in RAW_CHANNELS:
        if not width or not height:
            raise Malformed("header", f"encoding {encoding} needs 'width' and 'height' in the header")
        if len(payload) != height * step:
            raise Malformed("size", f"payload is {len(payload)} bytes; {encoding} {width}x{height} with step "
                                    f"{step} needs {height * step}")
    else:
        if bool(width) != bool(height):
            raise Malformed("header", f"{encoding}: give both 'width' and 'height' (they are checked) or neither")
        if len(payload) == 0:
            raise Malformed("size", f"{encoding} payload is empty")


def _parse_v2(head: bytes, part: Any, max_bytes: int) -> Parsed:
    """Wire format v2 (docs/zmq.md has the layout). The usual message, a raw frame, is accepted by one struct
    unpack and one compound test: this runs just after the receiving thread woke up, when every extra Python step
    costs 10-30x its warm time. Anything else goes through `_checked_v2`, which names what is wrong."""
    try:
        magic, code, flags, width, height, id_len, source_len, step, seq, stamp = V2_HEADER.unpack_from(head)
        channels = _V2_VIEW_CHANNELS[code]
        payload = memoryview(part)
    except (struct.error, IndexError, TypeError):
        return _checked_v2(head, part, max_bytes)
    row = width * channels
    fixed = V2_HEADER.size
    if (magic == V2_MAGIC and len(head) == fixed + id_len + source_len and row and height and step in (0, row)
            and len(payload) == height * row <= max_bytes and payload.ndim == 1 and payload.itemsize == 1
            and payload.c_contiguous and seq <= MAX_SEQ and (0.0 <= stamp < math.inf or not flags & V2_HAS_STAMP)):
        frame_id = source = None
        if id_len or source_len:
            try:
                frame_id = head[fixed:fixed + id_len].decode() or None
                source = head[fixed + id_len:].decode() or None
            except UnicodeDecodeError:
                return _checked_v2(head, part, max_bytes)
        # the read-only view (see decode_image) is made here: one step less for the usual frame
        image = np.ndarray((height, width, 3) if channels == 3 else (height, width), np.uint8, payload.toreadonly())
        return Parsed(V2_ENCODINGS[code], width, height, row, payload, seq if flags & V2_HAS_SEQ else None,
                      stamp if flags & V2_HAS_STAMP else None, frame_id, source, image)
    return _checked_v2(head, part, max_bytes)


def _checked_v2(head: bytes, part: Any, max_bytes: int) -> Parsed:
    """Every check of wire format v2, one by one; raises Malformed naming the first that fails."""
    fixed = V2_HEADER.size
    if len(head) < fixed:
        raise Malformed("header", f"binary header is {len(head)} bytes; version 2 needs at least {fixed}")
    magic, code, flags, width, height, id_len, source_len, step, seq, stamp = V2_HEADER.unpack_from(head)
    if magic != V2_MAGIC:
        raise Malformed("version", f"binary header of version {magic[3]}; this daemon speaks version 1 (JSON) "
                                   f"and 2 (binary)")
    if len(head) != fixed + id_len + source_len:
        raise Malformed("header", f"binary header is {len(head)} bytes; its text lengths ({id_len} + "
                                  f"{source_len}) make {fixed + id_len + source_len}")
    if code >= len(V2_ENCODINGS):
        raise Malformed("encoding", f"encoding byte {code} is not one of 0..{len(V2_ENCODINGS) - 1} "
                                    f"({', '.join(V2_ENCODINGS)})")
    encoding = V2_ENCODINGS[code]
    payload = _buffer(part)
    _check_size(payload, max_bytes)
    if not flags & V2_HAS_SEQ:
        seq = None
    elif seq > MAX_SEQ:
        raise Malformed("header", f"seq {seq} is over {MAX_SEQ}")
    if not flags & V2_HAS_STAMP:
        stamp = None
    elif not (stamp >= 0 and math.isfinite(stamp)):
        raise Malformed("header", f"stamp must be seconds since the epoch, got {stamp!r}")
    frame_id = _v2_text(head, fixed, id_len, "frame_id") if id_len else None
    source = _v2_text(head, fixed + id_len, source_len, "source") if source_len else None
    channels = RAW_CHANNELS.get(encoding)
    if channels is not None:
        row = width * channels
        if step == 0:
            step = row
        elif not row <= step <= 16 * row:
            raise Malformed("header", f"step {step} must be in {row}..{16 * row} for {encoding} width {width}")
    else:
        step = 0
    _check_geometry(encoding, width, height, step, payload)
    return Parsed(encoding, width, height, step, payload, seq, stamp, frame_id, source)


def _v2_text(head: bytes, start: int, length: int, key: str) -> str:
    try:
        return head[start:start + length].decode()
    except UnicodeDecodeError:
        raise Malformed("header", f"{key} is not UTF-8") from None


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
    if parsed.image is not None:
        return parsed.image
    channels = RAW_CHANNELS.get(parsed.encoding)
    if channels is not None:
        # one array over the buffer, rows `step` bytes apart (padded rows stay a strided view, no copy); the
        # parse checked that the payload is height x step bytes. Read-only: the frame is shared by every model
        # and output (frame.py), and ZeroMQ's buffer would otherwise be writable through it
        payload = memoryview(parsed.payload).toreadonly()
        if channels == 3:
            image = np.ndarray((parsed.height, parsed.width, 3), np.uint8, payload, 0, (parsed.step, 3, 1))
            return cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if parsed.encoding == "rgb8" else image
        return np.ndarray((parsed.height, parsed.width), np.uint8, payload, 0, (parsed.step, 1))
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


def encode_header_v2(encoding: str, width: int = 0, height: int = 0, step: int | None = None,
                     seq: int | None = None, stamp: float | None = None, source: str | None = None,
                     frame_id: str | None = None) -> bytes:
    """The v2 (binary) header frame for one message; the fields mean what they mean in v1."""
    flags = (V2_HAS_SEQ if seq is not None else 0) | (V2_HAS_STAMP if stamp is not None else 0)
    id_bytes = frame_id.encode() if frame_id else b""
    source_bytes = source.encode() if source else b""
    if len(id_bytes) > MAX_TEXT or len(source_bytes) > MAX_TEXT:
        raise ValueError(f"frame_id and source must be at most {MAX_TEXT} bytes in UTF-8")
    try:
        head = V2_HEADER.pack(V2_MAGIC, V2_ENCODINGS.index(encoding), flags, width, height, len(id_bytes),
                              len(source_bytes), step or 0, seq or 0, stamp or 0.0)
    except struct.error as exc:  # a field out of its range (width or height over 65535, a negative seq)
        raise ValueError(f"cannot describe this frame in wire format v2: {exc}") from None
    return head + id_bytes + source_bytes if id_bytes or source_bytes else head


def header_for_image(image: np.ndarray, encoding: str = "bgr8", version: int = VERSION, **fields: Any) -> bytes:
    """The header (wire format `version`, 1 or 2) for a raw image array (H x W x 3 for bgr8/rgb8, H x W for
    mono8), row step from its strides."""
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    channels = RAW_CHANNELS[encoding]
    if (channels == 1 and image.ndim != 2) or (channels == 3 and (image.ndim != 3 or image.shape[2] != 3)):
        raise ValueError(f"image of shape {image.shape} is not {encoding}")
    if not image.flags.c_contiguous:
        raise ValueError("image must be C-contiguous (np.ascontiguousarray)")
    height, width = image.shape[:2]
    encode = encode_header_v2 if version == 2 else encode_header
    return encode(encoding, width, height, width * channels, **fields)
