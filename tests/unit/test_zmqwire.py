"""The ZeroMQ frame decoder (wire formats v1 and v2, and imagezmq's), as a pure function: every valid encoding,
every malformed kind with its reason, and a fuzz run of 100,000+ generated messages that must never crash or
hang."""

from __future__ import annotations

import json
import math
import random
import struct
import time

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeinfer.transports.zmq import wire as zmqwire
from edgeinfer.transports.zmq.wire import (
    V2_HEADER,
    V2_MAGIC,
    Malformed,
    decode_message,
    encode_header,
    encode_header_v2,
    header_for_image,
)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    # smooth, so that JPEG keeps it close; the three channels differ, so a BGR/RGB swap shows
    y, x = np.indices((48, 64))
    return np.dstack([x * 4, y * 5, 255 - x * 2]).astype(np.uint8)


def _reason(parts, **kw) -> str:
    with pytest.raises(Malformed) as info:
        decode_message(parts, **kw)
    assert info.value.reason in zmqwire.REASONS
    return info.value.reason


def test_bgr8_round_trip_is_a_view_over_the_received_buffer(image) -> None:
    payload = bytearray(image.tobytes())
    header = header_for_image(image, seq=41, stamp=1764547200.25, source="front", frame_id="cam_front")
    parsed, out = decode_message([header, payload])
    assert np.array_equal(out, image)
    assert np.shares_memory(out, np.frombuffer(payload, np.uint8))  # no copy on the way in
    assert (parsed.seq, parsed.stamp, parsed.frame_id, parsed.source) == (41, 1764547200.25, "cam_front", "front")


def test_rgb8_is_converted_to_bgr_and_mono8_stays_gray(image) -> None:
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    _, out = decode_message([header_for_image(rgb, "rgb8"), rgb.tobytes()])
    assert np.array_equal(out, image)
    gray = np.ascontiguousarray(image[:, :, 0])
    _, out = decode_message([header_for_image(gray, "mono8"), gray.tobytes()])
    assert out.shape == (48, 64) and np.array_equal(out, gray)


def test_padded_rows_use_the_step(image) -> None:
    padded = np.zeros((48, 64 * 3 + 8), np.uint8)
    padded[:, : 64 * 3] = image.reshape(48, -1)
    header = encode_header("bgr8", 64, 48, step=64 * 3 + 8)
    _, out = decode_message([header, padded.tobytes()])
    assert np.array_equal(out, image)


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_compressed_frames_decode_and_their_size_is_checked(image, encoding) -> None:
    ok, data = cv2.imencode(".jpg" if encoding == "jpeg" else ".png", image)
    assert ok
    _, out = decode_message([encode_header(encoding, 64, 48), data.tobytes()])
    assert out.shape == image.shape
    assert np.abs(out.astype(int) - image).mean() < (8 if encoding == "jpeg" else 1)
    _, out = decode_message([encode_header(encoding), data.tobytes()])  # dimensions are optional
    assert out.shape == image.shape
    assert _reason([encode_header(encoding, 65, 48), data.tobytes()]) == "size"


def test_imagezmq_send_image_and_send_jpg_messages(image) -> None:
    meta = json.dumps({"msg": "rpi-1", "dtype": "uint8", "shape": list(image.shape)}).encode()
    parsed, out = decode_message([meta, image.tobytes()], protocol="imagezmq")
    assert np.array_equal(out, image) and parsed.source == "rpi-1" and parsed.seq is None
    data = cv2.imencode(".jpg", image)[1].tobytes()
    _, out = decode_message([json.dumps({"msg": "rpi-1"}).encode(), data], protocol="imagezmq")
    assert out.shape == image.shape
    assert _reason([meta, image.tobytes()[:-1]], protocol="imagezmq") == "size"
    float_meta = json.dumps({"msg": "x", "dtype": "float32", "shape": [2, 2]}).encode()
    assert _reason([float_meta, b"\0" * 16], protocol="imagezmq") == "encoding"
    assert _reason([json.dumps({"msg": "x"}).encode(), b"not a jpeg"], protocol="imagezmq") == "corrupt"


def test_each_malformed_kind_has_its_reason(image) -> None:
    good = header_for_image(image)
    payload = image.tobytes()
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    assert _reason([good]) == "parts"
    assert _reason([good, payload, b""]) == "parts"
    assert _reason([b"", payload]) == "header"
    assert _reason([b"\xff\xfe not json", payload]) == "header"
    assert _reason([b"[1, 2]", payload]) == "header"
    assert _reason([b" " * (zmqwire.MAX_HEADER_BYTES + 1), payload]) == "header"
    assert _reason([json.dumps({"v": 1, "encoding": "bgr8", "width": 64}).encode(), payload]) == "header"
    assert _reason([json.dumps({"v": 1, "encoding": "bgr8", "width": -1, "height": 48}).encode(), payload]) == "header"
    assert _reason([json.dumps({"v": 1, "encoding": "bgr8", "width": 64, "height": 48, "seq": "x"}).encode(),
                    payload]) == "header"
    assert _reason([json.dumps({"v": 2, "encoding": "bgr8"}).encode(), payload]) == "version"
    assert _reason([json.dumps({"v": True, "encoding": "bgr8"}).encode(), payload]) == "version"
    assert _reason([json.dumps({"v": 1, "encoding": "yuv422"}).encode(), payload]) == "encoding"
    assert _reason([good, payload[:-3]]) == "size"
    assert _reason([good, payload], max_bytes=len(payload) - 1) == "too_large"
    assert _reason([encode_header("jpeg"), jpeg[: len(jpeg) // 3]]) == "corrupt"
    assert _reason([encode_header("png"), b"\x89PNG\r\n\x1a\n" + b"\0" * 50]) == "corrupt"


def _mutations(rng: random.Random, seeds: list[list[bytes]]):
    """Messages near the valid ones (where bugs hide) and far from them."""
    ops = ("flip", "truncate", "extend", "field", "parts", "random", "swap")
    fields = ("v", "encoding", "width", "height", "step", "seq", "stamp", "source", "frame_id", "msg", "dtype",
              "shape")
    values = (None, True, -1, 0, 1, 3, 2**63, 2**70, 1e308, float("nan"), "", "bgr8", "jpeg", "x" * 300, [],
              [1, 2], [48, 64, 3], [0, 0], {}, 65_535, 65_536)
    while True:
        header, payload = rng.choice(seeds)
        op = rng.choice(ops)
        if op == "flip":
            target = bytearray(rng.choice((header, payload)))
            for _ in range(rng.randint(1, 4)):
                if target:
                    target[rng.randrange(len(target))] ^= 1 << rng.randrange(8)
            yield [bytes(target), payload] if rng.random() < 0.5 else [header, bytes(target)]
        elif op == "truncate":
            yield [header, payload[: rng.randrange(len(payload) + 1)]]
        elif op == "extend":
            yield [header, payload + bytes(rng.choice((1, 3, 64, 5000)))]
        elif op == "field":
            try:
                meta = json.loads(header)
            except ValueError:
                meta = {}
            meta[rng.choice(fields)] = rng.choice(values)
            if rng.random() < 0.2:
                meta.pop(rng.choice(fields), None)
            yield [json.dumps(meta).encode(), payload]
        elif op == "parts":
            yield [header, payload, payload][: rng.choice((0, 1, 3))] if rng.random() < 0.5 else [header] * 3
        elif op == "random":
            yield [rng.randbytes(rng.randrange(40)), rng.randbytes(rng.randrange(200))]
        else:
            yield [payload[:200], header]


def test_fuzz_100k_messages_never_crash_or_hang(image) -> None:
    rng = random.Random(9)
    small = np.ascontiguousarray(image[:6, :8])
    gray = np.ascontiguousarray(small[:, :, 0])
    seeds = [
        [header_for_image(small, seq=1, stamp=1.5), small.tobytes()],
        [header_for_image(gray, "mono8"), gray.tobytes()],
        [encode_header("bgr8", 8, 6, step=30), bytes(180)],
        [encode_header("jpeg", 8, 6), cv2.imencode(".jpg", small)[1].tobytes()],
        [encode_header("png"), cv2.imencode(".png", small)[1].tobytes()],
        [header_for_image(small, version=2, seq=1, stamp=1.5), small.tobytes()],
        [header_for_image(gray, "mono8", version=2, frame_id="cam"), gray.tobytes()],
        [encode_header_v2("bgr8", 8, 6, step=30, source="front"), bytes(180)],
        [encode_header_v2("jpeg", 8, 6), cv2.imencode(".jpg", small)[1].tobytes()],
    ]
    izmq_seeds = [
        [json.dumps({"msg": "a", "dtype": "uint8", "shape": [6, 8, 3]}).encode(), small.tobytes()],
        [json.dumps({"msg": "a"}).encode(), cv2.imencode(".jpg", small)[1].tobytes()],
    ]
    total, reasons, decoded = 0, dict.fromkeys(zmqwire.REASONS, 0), 0
    start = time.monotonic()
    for protocol, pool, count in (("edgeinfer", seeds, 80_000), ("imagezmq", izmq_seeds, 20_000)):
        messages = _mutations(rng, pool)
        for _ in range(count):
            parts = next(messages)
            try:
                parsed, out = decode_message(parts, max_bytes=4096, protocol=protocol)
            except Malformed as exc:
                reasons[exc.reason] += 1
            else:
                decoded += 1
                assert out.dtype == np.uint8
                assert parsed.width == 0 or out.shape[:2] == (parsed.height, parsed.width)
            total += 1
    elapsed = time.monotonic() - start
    print(f"\nfuzz: {total} messages in {elapsed:.1f} s, {decoded} decoded, dropped by reason {reasons}")
    assert total >= 100_000
    assert decoded > 1000  # the generator stays near valid messages, not only noise
    assert all(reasons[r] > 0 for r in zmqwire.REASONS), reasons  # it reached every check


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=4),
       st.dictionaries(st.sampled_from(["v", "encoding", "width", "height", "step", "seq", "stamp", "frame_id"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-5, 70_000), st.floats(),
                                 st.text(max_size=8), st.sampled_from(list(zmqwire.ENCODINGS)))))
def test_hypothesis_arbitrary_headers_and_parts(parts, header) -> None:
    for candidate in (parts, [json.dumps(header).encode(), b"".join(parts) or b"\0"]):
        try:
            decode_message(candidate)
        except Malformed as exc:
            assert exc.reason in zmqwire.REASONS


def test_header_for_image_refuses_what_it_cannot_describe(image) -> None:
    with pytest.raises(ValueError, match="C-contiguous"):
        header_for_image(image[:, ::2])
    with pytest.raises(ValueError, match="not mono8"):
        header_for_image(image, "mono8")
    with pytest.raises(ValueError, match="uint8"):
        header_for_image(image.astype(np.float32))


# -- wire format v2 (binary header) ----------------------------------------------------------------------------


def _v2(encoding="bgr8", width=64, height=48, step=0, seq=None, stamp=None, texts=b"", id_len=0, source_len=0,
        magic=V2_MAGIC, code=None) -> bytes:
    """A v2 header packed by hand (not by encode_header_v2), so that every field can be made wrong."""
    flags = (1 if seq is not None else 0) | (2 if stamp is not None else 0)
    code = zmqwire.V2_ENCODINGS.index(encoding) if code is None else code
    return V2_HEADER.pack(magic, code, flags, width, height, id_len, source_len, step, seq or 0,
                          stamp or 0.0) + texts


def test_v2_round_trip_is_a_read_only_view_with_every_field(image) -> None:
    payload = bytearray(image.tobytes())
    header = header_for_image(image, version=2, seq=41, stamp=1764547200.25, source="front", frame_id="cam_front")
    assert header[:4] == V2_MAGIC and len(header) == V2_HEADER.size + len("cam_front") + len("front")
    parsed, out = decode_message([header, payload])
    assert np.array_equal(out, image) and not out.flags.writeable
    assert np.shares_memory(out, np.frombuffer(payload, np.uint8))
    assert (parsed.seq, parsed.stamp, parsed.frame_id, parsed.source) == (41, 1764547200.25, "cam_front", "front")
    # without the optional fields: seq and stamp absent (not 0), texts None
    parsed, out = decode_message([header_for_image(image, version=2), payload])
    assert (parsed.seq, parsed.stamp, parsed.frame_id, parsed.source) == (None, None, None, None)
    assert np.array_equal(out, image)


def test_v2_takes_every_encoding_padded_rows_and_an_explicit_step(image) -> None:
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    assert np.array_equal(decode_message([header_for_image(rgb, "rgb8", 2), rgb.tobytes()])[1], image)
    gray = np.ascontiguousarray(image[:, :, 0])
    _, out = decode_message([header_for_image(gray, "mono8", 2), gray.tobytes()])
    assert out.shape == (48, 64) and np.array_equal(out, gray) and not out.flags.writeable
    padded = np.zeros((48, 64 * 3 + 8), np.uint8)
    padded[:, : 64 * 3] = image.reshape(48, -1)
    assert np.array_equal(decode_message([_v2(step=64 * 3 + 8), padded.tobytes()])[1], image)
    assert np.array_equal(decode_message([_v2(step=64 * 3), image.tobytes()])[1], image)
    for encoding, ext in (("jpeg", ".jpg"), ("png", ".png")):
        data = cv2.imencode(ext, image)[1].tobytes()
        assert decode_message([encode_header_v2(encoding, 64, 48), data])[1].shape == image.shape
        assert decode_message([encode_header_v2(encoding), data])[1].shape == image.shape
        assert _reason([encode_header_v2(encoding, 65, 48), data]) == "size"


def test_v2_each_malformed_kind_has_its_reason(image) -> None:
    payload = image.tobytes()
    assert _reason([_v2()[:20], payload]) == "header"  # shorter than the fixed part
    assert _reason([_v2(magic=b"EIF\x03"), payload]) == "version"
    assert _reason([_v2(id_len=4), payload]) == "header"  # the text lengths promise bytes that are not there
    assert _reason([_v2(texts=b"xx"), payload]) == "header"  # bytes after the header that no length accounts for
    assert _reason([_v2(code=9), payload]) == "encoding"
    assert _reason([_v2(width=0), payload]) == "header"
    assert _reason([_v2(height=0), payload]) == "header"
    assert _reason([_v2(step=10), payload]) == "header"  # below width x channels
    assert _reason([_v2(step=64 * 3 * 17), payload]) == "header"  # over 16 x that
    assert _reason([_v2(seq=2**63), payload]) == "header"
    assert _reason([_v2(stamp=float("nan")), payload]) == "header"
    assert _reason([_v2(stamp=-1.0), payload]) == "header"
    assert _reason([_v2(texts=b"\xff\xfe", id_len=2), payload]) == "header"  # frame_id not UTF-8
    assert _reason([_v2(), payload[:-3]]) == "size"
    assert _reason([_v2(), payload], max_bytes=len(payload) - 1) == "too_large"
    assert _reason([_v2("jpeg", 0, 0), b"not a jpeg"]) == "corrupt"
    assert _reason([_v2("jpeg", 64, 0), b"\xff\xd8"]) == "header"  # width without height
    assert _reason([_v2(), payload, payload]) == "parts"
    with pytest.raises(ValueError, match="at most 255 bytes"):
        encode_header_v2("bgr8", 64, 48, frame_id="x" * 256)


def test_v1_and_v2_are_told_apart_by_their_first_bytes(image) -> None:
    # one socket takes both: a JSON header starts with "{" (or blanks), a binary one with "EIF"
    for version in (1, 2):
        parsed, out = decode_message([header_for_image(image, version=version, seq=3), image.tobytes()])
        assert parsed.seq == 3 and np.array_equal(out, image)
    assert _reason([b"EIF", image.tobytes()]) == "header"
    assert _reason([b' {"v": 1}', image.tobytes()]) == "encoding"  # still JSON, still v1's reasons


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(range(7)), st.integers(0, 3), st.sampled_from([0, 1, 6, 8, 65_535]),
       st.sampled_from([0, 1, 6, 65_535]), st.sampled_from([0, 1, 3, 8, 18, 24, 30, 400]),
       st.sampled_from([0, 5, 2**63 - 1, 2**63, 2**64 - 1]),
       st.sampled_from([0.0, 1.5, -0.0, -1.0, math.inf, math.nan, 1e308]),
       st.sampled_from([b"", b"cam", b"\xff"]), st.sampled_from([b"", b"src"]),
       st.sampled_from([0, 17, 143, 144, 145, 4096]), st.sampled_from([b"EIF\x02", b"EIF\x01"]))
def test_hypothesis_v2_the_fast_path_agrees_with_every_check(code, flags, width, height, step, seq, stamp,
                                                               frame_id, source, size, magic) -> None:
    """The fast accept for the usual raw frame (`_parse_v2`) must take nothing that the full checks refuse,
    and give what they give."""
    head = struct.pack("<4sBBHHBBIQd", magic, code, flags, width, height, len(frame_id), len(source), step, seq,
                       stamp) + frame_id + source
    payload = bytes(size)
    outcomes, images = [], []
    for parse in (zmqwire._parse_v2, zmqwire._checked_v2):
        try:
            parsed = parse(head, payload, 4096)
        except Malformed as exc:
            outcomes.append(exc.reason)
        else:
            outcomes.append((parsed.encoding, parsed.width, parsed.height, parsed.step, bytes(parsed.payload),
                             parsed.seq, parsed.stamp, parsed.frame_id, parsed.source))
            try:
                images.append(zmqwire.decode_image(parsed))
            except Malformed as exc:
                images.append(exc.reason)
    assert outcomes[0] == outcomes[1]
    if images and not isinstance(images[0], str):  # the view the fast path made is the one decode_image makes
        assert images[0].shape == images[1].shape and np.array_equal(images[0], images[1])
        assert outcomes[0][0] == "rgb8" or not images[0].flags.writeable  # rgb8 is converted into a new array
