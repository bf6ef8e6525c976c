"""Ultralytics segment and pose heads: known answers through letterbox and stretch, against a NumPy reference
of Ultralytics' own post-processing; the JSON record (COCO RLE checked with pycocotools); fitting from metadata."""

from __future__ import annotations

import numpy as np
import pytest

from edgeinfer.decoders import (
    DecodeError,
    DecoderContext,
    YoloPoseDecoder,
    YoloPoseDecoderConfig,
    YoloSegmentDecoder,
    YoloSegmentDecoderConfig,
)
from edgeinfer.decoders.metadata import MetadataError, parse_metadata
from edgeinfer.instances import Instance
from edgeinfer.preprocess import fit_transform
from support.yolo_heads import INPUT, pose_outputs, reference_masks, segment_outputs

LABELS = ["person", "ball"]
SOURCES = [(128, 64, "letterbox"), (128, 64, "stretch"), (50, 90, "letterbox"), (64, 64, "stretch")]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b)))


def segment_decoder(**config) -> YoloSegmentDecoder:
    head, protos = segment_outputs()
    return YoloSegmentDecoder(YoloSegmentDecoderConfig(**config), LABELS, [head.shape, protos.shape],
                              DecoderContext(input_size=(INPUT, INPUT)))


@pytest.mark.parametrize("src_w, src_h, mode", SOURCES)
def test_segment_masks_in_source_pixels_match_ultralytics_post_processing(src_w, src_h, mode):
    head, protos = segment_outputs()
    transform = fit_transform(src_w, src_h, INPUT, INPUT, mode)
    found = segment_decoder().decode([head, protos], 0, transform)
    assert [(d.label, round(d.score, 2)) for d in found] == [("ball", 0.9), ("person", 0.8)]
    reference = reference_masks(head, protos, transform, keep=[0, 1])
    for instance, expected in zip(found, reference, strict=True):
        mask = instance.mask.full()
        assert mask.shape == (src_h, src_w)
        assert iou(mask, expected) >= 0.97, (instance.label, iou(mask, expected))
    # the ball's mask is the disk of radius 12 input pixels around (32, 32), mapped into the source (drawn on
    # prototype pixels of 4 x 4 input pixels, so its edge is that coarse)
    v, u = np.mgrid[0:src_h, 0:src_w] + 0.5
    x = u * transform.scale_x + transform.pad_x
    y = v * transform.scale_y + transform.pad_y
    disk = np.hypot(x - 32, y - 32) <= 12
    assert iou(found[0].mask.full(), disk) >= 0.85
    # the person's mask fills its box: nothing outside it
    x1, y1, x2, y2 = found[1].bbox
    mask = found[1].mask.full()
    assert not mask[(v < y1) | (v > y2) | (u < x1) | (u > x2)].any() and mask.sum() > 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools 2.0.11 on numpy 2 (its own __array__)
def test_segment_record_is_coco_rle_that_pycocotools_decodes():
    mask_api = pytest.importorskip("pycocotools.mask")
    head, protos = segment_outputs()
    transform = fit_transform(128, 64, INPUT, INPUT, "letterbox")
    for instance in segment_decoder().decode([head, protos], 0, transform):
        record = instance.to_dict()
        assert record["mask"]["size"] == [64, 128]
        decoded = mask_api.decode({"size": record["mask"]["size"], "counts": record["mask"]["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), instance.mask.full())
        assert mask_api.area({"size": [64, 128], "counts": record["mask"]["counts"].encode()}) == instance.mask.area


def test_segment_class_filter_threshold_and_shape_errors():
    head, protos = segment_outputs()
    transform = fit_transform(64, 64, INPUT, INPUT, "stretch")
    assert [d.label for d in segment_decoder(classes=["person"]).decode([head, protos], 0, transform)] == ["person"]
    assert len(segment_decoder(conf_threshold=0.05).decode([head, protos], 0, transform)) == 3
    swapped = YoloSegmentDecoder(YoloSegmentDecoderConfig(), LABELS, [protos.shape, head.shape])
    assert len(swapped.decode([protos, head], 0, transform)) == 2  # outputs told apart by rank, not order
    with pytest.raises(DecodeError, match="two outputs"):
        YoloSegmentDecoder(YoloSegmentDecoderConfig(), LABELS, [head.shape])
    with pytest.raises(DecodeError, match="channels"):
        YoloSegmentDecoder(YoloSegmentDecoderConfig(), LABELS, [(1, 5, 3), protos.shape])
    with pytest.raises(DecodeError, match="expected 8 channels"):
        segment_decoder().decode([head[:, :7], protos], 0, transform)


@pytest.mark.parametrize("src_w, src_h, mode", SOURCES)
def test_pose_keypoints_in_source_pixels(src_w, src_h, mode):
    head, keypoints = pose_outputs()
    transform = fit_transform(src_w, src_h, INPUT, INPUT, mode)
    decoder = YoloPoseDecoder(YoloPoseDecoderConfig(), ["person"], [head.shape])
    [person] = decoder.decode([head], 0, transform)
    assert isinstance(person, Instance) and person.label == "person" and person.score == pytest.approx(0.85)
    expected_x = np.clip((keypoints[:, 0] - transform.pad_x) / transform.scale_x, 0, src_w)
    expected_y = np.clip((keypoints[:, 1] - transform.pad_y) / transform.scale_y, 0, src_h)
    np.testing.assert_allclose(person.keypoints[:, 0], expected_x, atol=1e-4)
    np.testing.assert_allclose(person.keypoints[:, 1], expected_y, atol=1e-4)
    np.testing.assert_allclose(person.keypoints[:, 2], keypoints[:, 2], atol=1e-6)
    record = person.to_dict()
    assert len(record["keypoints"]) == 17 and record["keypoints"][3] == [
        round(float(expected_x[3]), 1), round(float(expected_y[3]), 1), 0.15]
    np.testing.assert_allclose(person.bbox, transform.to_source(np.array([[8.0, 10, 48, 40]]))[0], atol=1e-6)


def test_pose_keypoint_shape_from_config_or_metadata():
    head, _ = pose_outputs(k=5)
    decoder = YoloPoseDecoder(YoloPoseDecoderConfig(keypoints=(5, 3)), ["person"], [head.shape])
    assert decoder.num_classes == 1 and decoder.describe() == "yolo pose (1 class, 5 keypoints x 3)"
    with pytest.raises(DecodeError, match="needs 4 \\+ nc \\+ 51"):
        YoloPoseDecoder(YoloPoseDecoderConfig(), ["person"], [head.shape])  # 17 x 3 does not fit 20 channels
    assert parse_metadata({"kpt_shape": "[17, 3]"}).kpt_shape == (17, 3)
    with pytest.raises(MetadataError, match="kpt_shape"):
        parse_metadata({"kpt_shape": "[17, 4]"})
