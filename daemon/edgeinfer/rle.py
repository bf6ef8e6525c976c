"""COCO run-length encoding of binary masks, in NumPy (no pycocotools needed at run time).

A mask of H x W is read column by column (Fortran order); `counts` alternate runs of 0s and 1s, starting with
0s. The compact form is pycocotools' string: each count (from the third on, minus the count two before it)
in 5-bit groups, least significant first, offset by 48 into printable ASCII, bit 0x20 meaning "more groups".
Tests compare both forms with pycocotools.
"""

from __future__ import annotations

import numpy as np


def mask_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts of a 2-D boolean mask."""
    flat = np.asarray(mask, bool).ravel(order="F")
    return runs(flat)


def runs(flat: np.ndarray) -> list[int]:
    """Run lengths of a flat boolean sequence, the first a run of False (0 when it starts with True)."""
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return counts


def counts_to_string(counts: list[int]) -> str:
    """pycocotools' compressed string of `counts` (rleToString)."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: differences may be negative
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_counts(text: str) -> list[int]:
    """The inverse of `counts_to_string` (rleFrString)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = 0
        k = 0
        more = True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode_counts(counts: list[int], height: int, width: int) -> np.ndarray:
    """A boolean H x W mask from uncompressed counts."""
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    if flat.size != height * width:
        raise ValueError(f"RLE counts sum to {flat.size}, not {height} x {width} = {height * width}")
    return flat.reshape((height, width), order="F")


def encode(mask: np.ndarray) -> dict[str, object]:
    """{"size": [H, W], "counts": compact string}: COCO's compressed RLE, as pycocotools.mask.encode writes it
    (with counts as str instead of bytes, for JSON)."""
    height, width = mask.shape
    return {"size": [int(height), int(width)], "counts": counts_to_string(mask_counts(mask))}


def decode(rle: dict[str, object]) -> np.ndarray:
    height, width = rle["size"]  # type: ignore[misc]
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    return decode_counts(list(counts), int(height), int(width))  # type: ignore[arg-type]
