"""COCO RLE in NumPy (edgeinfer.rle, InstanceMask) against pycocotools, the reference implementation."""

from __future__ import annotations

import numpy as np
import pytest

from edgeinfer import rle
from edgeinfer.instances import InstanceMask

mask_api = pytest.importorskip("pycocotools.mask")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools 2.0.11 on numpy 2


def reference(mask: np.ndarray) -> str:
    return mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def test_full_image_masks_encode_as_pycocotools_does_and_decode_back():
    rng = np.random.default_rng(0)
    for case in range(250):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((height, width)) < rng.random()
        if case % 5 == 0:
            mask[:] = case % 10 == 0  # all zeros, all ones
        encoded = rle.encode(mask)
        assert encoded == {"size": [height, width], "counts": reference(mask)}, case
        assert np.array_equal(rle.decode(encoded), mask)
        assert np.array_equal(mask_api.decode({"size": [height, width], "counts": encoded["counts"].encode()}),
                              mask.astype(np.uint8))


def test_masks_kept_as_crops_encode_like_the_full_image():
    rng = np.random.default_rng(1)
    for case in range(250):
        height, width = (int(v) for v in rng.integers(1, 30, 2))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(0, width - x0 + 1)), int(rng.integers(0, height - y0 + 1))
        crop = rng.random((h, w)) < 0.5
        if case % 4 == 0:
            crop[:] = True
        mask = InstanceMask(x0, y0, crop, height, width)
        assert mask.to_rle() == {"size": [height, width], "counts": reference(mask.full())}, case
        assert mask.area == int(mask_api.area({"size": [height, width], "counts": reference(mask.full()).encode()}))


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="sum to 5, not 2 x 2"):
        rle.decode_counts([2, 3], 2, 2)
