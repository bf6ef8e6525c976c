"""Decoders: labels, config, layout detection and hand-made YOLO outputs with known detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from edgeinfer.decoders import (
    DECODERS,
    DecodeError,
    DecoderConfig,
    Detection,
    YoloDecoder,
    YoloDecoderConfig,
    create_decoder,
    label_for,
    load_labels,
)
from edgeinfer.decoders.yolo import resolve_layout
from edgeinfer.preprocess import Transform, fit_transform

LABELS = ["person", "car", "dog"]

# 800x400 source letterboxed into 400x400: gain 0.5, 100 px bands above and below;
# source = (input - pad) / 0.5
LETTERBOX = fit_transform(800, 400, 400, 400, "letterbox")
IDENTITY = Transform(1.0, 1.0, 0.0, 0.0, 400, 400)

# One scene in every layout. Per candidate: box (cx, cy, w, h) in input pixels, objectness, class probs.
#   0: class 1, score 0.9 * 0.8 = 0.72, box (80, 190, 120, 210)      -> kept
#   1: class 1, score 0.8 * 0.85 = 0.68, shifted 2 px (IoU 0.90)     -> suppressed by 0
#   2: class 2, score 0.9 * 0.5 = 0.45, same box as 0                -> kept (other class)
#   3: objectness 0.2 below the threshold                            -> dropped early
#   4: objectness 0.5 passes, score 0.5 * 0.4 = 0.2 does not         -> dropped
#   5: class 0, score 1.0 * 0.3 = 0.3, box (295, 145, 305, 155)      -> kept
SCENE = [
    ((100, 200, 40, 20), 0.9, (0.1, 0.8, 0.05)),
    ((102, 200, 40, 20), 0.8, (0.0, 0.85, 0.0)),
    ((100, 200, 40, 20), 0.9, (0.0, 0.0, 0.5)),
    ((200, 200, 10, 10), 0.2, (1.0, 0.0, 0.0)),
    ((250, 250, 10, 10), 0.5, (0.4, 0.0, 0.0)),
    ((300, 150, 10, 10), 1.0, (0.3, 0.0, 0.0)),
]
# (class_id, label, score, bbox in source pixels through LETTERBOX)
EXPECTED = [
    (1, "car", 0.72, (160.0, 180.0, 240.0, 220.0)),
    (2, "dog", 0.45, (160.0, 180.0, 240.0, 220.0)),
    (0, "person", 0.3, (590.0, 90.0, 610.0, 110.0)),
]


def v5_output(scene=SCENE) -> np.ndarray:
    rows = [[*box, objectness, *probs] for box, objectness, probs in scene]
    return np.array([rows], np.float32)  # [1, N, 5 + nc]


def v8_output(scene=SCENE, candidates: int = 10) -> np.ndarray:
    """[1, 4 + nc, N], padded with empty candidates: real v8 heads have far more boxes than values per box."""
    rows = [[*box, *(objectness * p for p in probs)] for box, objectness, probs in scene]
    rows += [[0.0] * len(rows[0])] * (candidates - len(rows))
    return np.ascontiguousarray(np.array([rows], np.float32).transpose(0, 2, 1))


def as_tuples(detections: list[Detection]) -> list[tuple]:
    return [(d.class_id, d.label, d.score, d.bbox) for d in detections]


def assert_detections(detections: list[Detection], expected: list[tuple]) -> None:
    assert len(detections) == len(expected), as_tuples(detections)
    for got, (class_id, label, score, bbox) in zip(detections, expected, strict=True):
        assert (got.class_id, got.label) == (class_id, label)
        assert got.score == pytest.approx(score, abs=1e-5)
        assert got.bbox == pytest.approx(bbox, abs=1e-3)


def make(output: np.ndarray, labels=LABELS, **fields) -> YoloDecoder:
    decoder = create_decoder(YoloDecoderConfig(**fields), labels, [output.shape])
    assert isinstance(decoder, YoloDecoder)
    return decoder


# -- Detection and labels -------------------------------------------------------------------------------


def test_detection_to_dict_uses_plain_rounded_values() -> None:
    detection = Detection(np.int64(2), "dog", np.float32(0.876543), (np.float32(10.04), 20.06, 30.0, 40.55))
    record = detection.to_dict()
    assert record == {"class_id": 2, "label": "dog", "score": 0.8765, "bbox": [10.0, 20.1, 30.0, 40.5]}
    assert type(record["class_id"]) is int and type(record["score"]) is float
    assert all(type(value) is float for value in record["bbox"])


def test_load_labels_strips_and_skips_trailing_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("\ufeffperson \n  car\n\ndog\n\n \n", encoding="utf-8")
    assert load_labels(path) == ["person", "car", "class_2", "dog"]  # an inner blank keeps its id


def test_load_labels_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="labels file not found: .*missing.txt"):
        load_labels(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="no names: .*empty.txt"):
        load_labels(empty)


def test_label_for_ids_beyond_the_list() -> None:
    assert label_for(LABELS, 1) == "car"
    assert label_for(LABELS, 3) == "class_3"
    assert label_for([], 0) == "class_0"


# -- config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"conf_threshold": 1.5}, "conf_threshold"),
        ({"iou_threshold": -0.1}, "iou_threshold"),
        ({"max_detections": 0}, "max_detections"),
        ({"classes": []}, "classes is empty"),
        ({"classes": [1, -2]}, "-2"),
        ({"layout": "v9"}, "layout"),
        ({"nms": True}, "nms"),
    ],
)
def test_yolo_config_rejects_bad_values(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        YoloDecoderConfig(**fields)


def test_decoder_config_union_dispatches_on_type() -> None:
    adapter = TypeAdapter(DecoderConfig)
    config = adapter.validate_python({"type": "yolo", "conf_threshold": 0.5})
    assert isinstance(config, YoloDecoderConfig) and config.conf_threshold == 0.5
    with pytest.raises(ValidationError, match="'yolo', 'detr', 'classify', 'dense'"):
        adapter.validate_python({"type": "ssd"})
    assert DECODERS["yolo"] is YoloDecoder


# -- layout detection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "num_labels", "layout"),
    [
        ((1, 2535, 85), 80, "v5"),  # yolov3-tiny
        ((1, 2535, 85), 0, "v5"),
        ((1, 25200, 85), 80, "v5"),
        (("batch", None, 85), 80, "v5"),
        ((1, 2535, 25), 80, "v5"),  # labels do not match the model: the shape still decides
        ((1, 84, 8400), 80, "v8"),
        ((1, 84, 8400), 0, "v8"),
        ((None, 84, "anchors"), 0, "v8"),
        ((1, 5, 8400), 1, "v8"),  # one-class v8
        ((1, 300, 6), 80, "v10"),
        ((1, 6, 8), 3, "v5"),  # tiny hand-made outputs decide by the class count
        ((1, 7, 10), 3, "v8"),
        ((1, 7, 6), 3, "v10"),  # class counts fit v8 and v10; only v10 has the shape of one
    ],
)
def test_auto_layout(shape: tuple, num_labels: int, layout: str) -> None:
    assert resolve_layout("auto", shape, num_labels) == layout


@pytest.mark.parametrize(
    ("shape", "num_labels", "message"),
    [
        ((1, 300, 6), 0, "fits layouts \\['v5', 'v10'\\]"),  # v10 or one-class v5
        ((1, 300, 6), 1, "with 1 labels"),
        ((1, 84, 84), 0, "fits none"),
        ((1, 2535), 80, "3-D"),
        ((1, 3, 2535, 85), 80, "3-D"),
    ],
)
def test_auto_layout_refuses_to_guess(shape: tuple, num_labels: int, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        resolve_layout("auto", shape, num_labels)


def test_explicit_layout_is_checked_against_the_shape() -> None:
    assert resolve_layout("v5", (1, 300, 6), 0) == "v5"
    assert resolve_layout("v10", (1, 300, 6), 0) == "v10"
    with pytest.raises(DecodeError, match=r"layout v10 expects \[B, N, 6\], got shape \(1, 2535, 85\)"):
        resolve_layout("v10", (1, 2535, 85), 80)
    with pytest.raises(DecodeError, match="layout v8 expects"):
        resolve_layout("v8", (1, 4, 8400), 80)


# -- decoding -------------------------------------------------------------------------------------------


def test_v5_known_answer_through_letterbox() -> None:
    output = v5_output()
    decoder = make(output)
    assert decoder.layout == "v5"
    assert_detections(decoder.decode([output], 0, LETTERBOX), EXPECTED)


def test_v5_identity_transform_keeps_input_pixels() -> None:
    output = v5_output()
    detections = make(output).decode([output], 0, IDENTITY)
    assert detections[0].bbox == pytest.approx((80.0, 190.0, 120.0, 210.0))
    assert detections[2].bbox == pytest.approx((295.0, 145.0, 305.0, 155.0))


def test_v8_known_answer_through_letterbox() -> None:
    output = v8_output()
    decoder = make(output)
    assert decoder.layout == "v8" and output.shape == (1, 7, 10)
    assert_detections(decoder.decode([output], 0, LETTERBOX), EXPECTED)


def test_v8_float16_output() -> None:
    output = v8_output().astype(np.float16)
    detections = make(output).decode([output], 0, LETTERBOX)
    assert [d.class_id for d in detections] == [1, 2, 0]
    assert detections[0].score == pytest.approx(0.72, abs=1e-3)
    assert detections[0].bbox == pytest.approx((160.0, 180.0, 240.0, 220.0), abs=0.2)


def test_v10_thresholds_without_nms() -> None:
    rows = [
        (80, 190, 120, 210, 0.72, 1),
        (82, 190, 122, 210, 0.68, 1),  # overlaps row 0 in the same class: end-to-end models mean it
        (0, 0, 10, 10, 0.1, 2),  # below the threshold
        (295, 145, 305, 155, 0.3, 0),
        (0, 0, 0, 0, 0.9, -1),  # padding row
        (0, 0, 0, 0, 0.0, 0),
    ]
    output = np.array([rows], np.float32)
    decoder = make(output)
    assert decoder.layout == "v10"
    assert_detections(
        decoder.decode([output], 0, LETTERBOX),
        [
            (1, "car", 0.72, (160.0, 180.0, 240.0, 220.0)),
            (1, "car", 0.68, (164.0, 180.0, 244.0, 220.0)),
            (0, "person", 0.3, (590.0, 90.0, 610.0, 110.0)),
        ],
    )
    top = make(output, max_detections=1).decode([output], 0, LETTERBOX)
    assert [(d.class_id, round(d.score, 2)) for d in top] == [(1, 0.72)]


@pytest.mark.parametrize("build", [v5_output, v8_output], ids=["v5", "v8"])
def test_conf_threshold_is_inclusive_and_raising_it_drops(build) -> None:
    output = build()
    kept = make(output, conf_threshold=0.3).decode([output], 0, LETTERBOX)
    assert [d.class_id for d in kept] == [1, 2, 0]  # 0.3 itself is kept
    kept = make(output, conf_threshold=0.5).decode([output], 0, LETTERBOX)
    assert [d.class_id for d in kept] == [1]
    assert len(make(output, conf_threshold=0.9).decode([output], 0, LETTERBOX)) == 0


@pytest.mark.parametrize("build", [v5_output, v8_output], ids=["v5", "v8"])
def test_iou_threshold_controls_suppression(build) -> None:
    output = build()
    # IoU of candidates 0 and 1 is 760 / 840 = 0.905: a looser threshold keeps both.
    kept = make(output, iou_threshold=0.95).decode([output], 0, LETTERBOX)
    assert [(d.class_id, round(d.score, 2)) for d in kept] == [(1, 0.72), (1, 0.68), (2, 0.45), (0, 0.3)]


@pytest.mark.parametrize("build", [v5_output, v8_output], ids=["v5", "v8"])
def test_classes_filter(build) -> None:
    output = build()
    kept = make(output, classes=[0, 2]).decode([output], 0, LETTERBOX)
    assert [d.class_id for d in kept] == [2, 0]


@pytest.mark.parametrize("build", [v5_output, v8_output], ids=["v5", "v8"])
def test_max_detections(build) -> None:
    output = build()
    kept = make(output, max_detections=2).decode([output], 0, LETTERBOX)
    assert [d.class_id for d in kept] == [1, 2]


@pytest.mark.parametrize("build", [v5_output, v8_output], ids=["v5", "v8"])
def test_class_agnostic_suppresses_the_other_class(build) -> None:
    output = build()
    kept = make(output, class_agnostic=True).decode([output], 0, LETTERBOX)
    assert [d.class_id for d in kept] == [1, 0]


def test_nothing_above_threshold_gives_empty_list() -> None:
    output = np.zeros((1, 2535, 85), np.float32)
    assert len(make(output, labels=[]).decode([output], 0, LETTERBOX)) == 0


def test_labels_beyond_the_list_are_named_by_id() -> None:
    output = v5_output()
    decoder = make(output, labels=["person"], layout="v5")
    assert [d.label for d in decoder.decode([output], 0, LETTERBOX)] == ["class_1", "class_2", "person"]


def test_batch_index_picks_the_item() -> None:
    first = v5_output()
    second = v5_output([((300, 150, 10, 10), 1.0, (0.0, 0.0, 0.9))])
    second = np.concatenate([second, np.zeros((1, 5, 8), np.float32)], axis=1)  # pad to 6 candidates
    batch = np.concatenate([first, second])
    decoder = make(batch)
    assert [d.class_id for d in decoder.decode([batch], 0, LETTERBOX)] == [1, 2, 0]
    assert_detections(decoder.decode([batch], 1, LETTERBOX), [(2, "dog", 0.9, (590.0, 90.0, 610.0, 110.0))])
    with pytest.raises(DecodeError, match="batch index 2 out of range"):
        decoder.decode([batch], 2, LETTERBOX)


def test_dynamic_box_count_accepts_any_n() -> None:
    decoder = create_decoder(YoloDecoderConfig(), LABELS, [("batch", "boxes", 8)])
    assert decoder.layout == "v5"
    small, large = v5_output(), np.concatenate([v5_output(), np.zeros((1, 100, 8), np.float32)], axis=1)
    assert len(decoder.decode([small], 0, LETTERBOX)) == 3
    assert len(decoder.decode([large], 0, LETTERBOX)) == 3


def test_wrong_output_shape_raises_decode_error() -> None:
    decoder = make(np.zeros((1, 2535, 85), np.float32), labels=[])
    with pytest.raises(DecodeError, match=r"expected shape \(B, 2535, 85\), got \(1, 2535, 84\)"):
        decoder.decode([np.zeros((1, 2535, 84), np.float32)], 0, LETTERBOX)
    with pytest.raises(DecodeError, match=r"expected a 3-D array, got \(2535, 85\)"):
        decoder.decode([np.zeros((2535, 85), np.float32)], 0, LETTERBOX)
    with pytest.raises(DecodeError, match="no outputs"):
        decoder.decode([], 0, LETTERBOX)


def test_create_decoder_needs_an_output() -> None:
    with pytest.raises(DecodeError, match="at least one model output"):
        create_decoder(YoloDecoderConfig(), LABELS, [])


def test_boxes_outside_the_image_are_clipped_to_the_source() -> None:
    # A box reaching into the padding band and past the right edge.
    output = v5_output([((390, 100, 40, 20), 0.9, (0.9, 0.0, 0.0))])
    [detection] = make(output, layout="v5").decode([output], 0, LETTERBOX)
    assert detection.bbox == pytest.approx((740.0, 0.0, 800.0, 20.0))
