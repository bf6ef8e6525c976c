"""The pixel size a PNG or JPEG declares, read from its header without decoding it.

A 1 MB PNG can declare 20000 x 20000 pixels (a "decompression bomb": 1.2 GB once decoded). Reading the size
first lets a receiver refuse it before anything is allocated. PNG: the IHDR chunk, which the format requires
first. JPEG: the first start-of-frame marker (SOF0..SOF15 except DHT, JPG and DAC), found by walking the
marker segments by their lengths.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0-CF except C4 (DHT), C8 (JPG), CC (DAC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_MAX_SEGMENTS = 1000  # a header is a few dozen segments; beyond this it is not worth walking


def declared_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) as the header states them, or None when it is neither a PNG nor a JPEG header."""
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if bytes(view[:8]) == PNG_SIGNATURE:
        if len(view) < 24 or bytes(view[12:16]) != b"IHDR":
            return None
        width, height = struct.unpack(">II", bytes(view[16:24]))
        return width, height
    if bytes(view[:2]) == b"\xff\xd8":
        return _jpeg_size(view)
    return None


def _jpeg_size(view) -> tuple[int, int] | None:
    at = 2
    for _ in range(_MAX_SEGMENTS):
        while at < len(view) and view[at] == 0xFF and at + 1 < len(view) and view[at + 1] == 0xFF:
            at += 1  # fill bytes
        if at + 4 > len(view) or view[at] != 0xFF:
            return None
        marker = view[at + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers: no length
            at += 2
            continue
        length = (view[at + 2] << 8) | view[at + 3]
        if marker in _SOF:
            if at + 9 > len(view) or length < 7:
                return None
            height = (view[at + 5] << 8) | view[at + 6]
            width = (view[at + 7] << 8) | view[at + 8]
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header: not a valid JPEG
            return None
        at += 2 + length
    return None
