"""NMS: hand-made cases with known answers, both internal strategies, and a pure-Python reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeinfer.decoders import nms as nms_module
from edgeinfer.decoders.nms import nms, nms_agnostic


@pytest.fixture(params=["matrix", "loop"])
def strategy(request, monkeypatch) -> str:
    """Run a test through both code paths: the IoU-matrix one and the O(N)-memory loop."""
    if request.param == "loop":
        monkeypatch.setattr(nms_module, "_MATRIX_LIMIT", 0)
    else:
        monkeypatch.setattr(nms_module, "_MATRIX_LIMIT", 10**6)
    return request.param


def boxes_of(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, np.float64).reshape(-1, 4)


def test_empty_input_gives_empty_int_array(strategy: str) -> None:
    kept = nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), 0.5)
    assert kept.shape == (0,) and kept.dtype == np.int64
    assert nms_agnostic(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_overlapping_same_class_keeps_the_higher_score(strategy: str) -> None:
    boxes = boxes_of((0, 0, 10, 10), (1, 1, 11, 11), (50, 50, 60, 60))  # IoU(0, 1) = 81/119 = 0.68
    kept = nms(boxes, np.array([0.6, 0.9, 0.5]), np.array([3, 3, 3]), 0.5)
    assert kept.tolist() == [1, 2]


def test_overlapping_different_classes_are_both_kept(strategy: str) -> None:
    boxes = boxes_of((0, 0, 10, 10), (1, 1, 11, 11))
    kept = nms(boxes, np.array([0.6, 0.9]), np.array([0, 1]), 0.5)
    assert kept.tolist() == [1, 0]


def test_class_agnostic_suppresses_across_classes(strategy: str) -> None:
    boxes = boxes_of((0, 0, 10, 10), (1, 1, 11, 11))
    scores, classes = np.array([0.6, 0.9]), np.array([0, 1])
    assert nms(boxes, scores, classes, 0.5, class_agnostic=True).tolist() == [1]
    assert nms_agnostic(boxes, scores, 0.5).tolist() == [1]


def test_equal_scores_keep_the_lower_index(strategy: str) -> None:
    boxes = boxes_of((0, 0, 10, 10), (0, 0, 10, 10), (20, 20, 30, 30), (20, 20, 30, 30))
    kept = nms(boxes, np.array([0.5, 0.5, 0.7, 0.7]), np.zeros(4, np.int64), 0.5)
    assert kept.tolist() == [2, 0]


def test_result_is_sorted_by_score(strategy: str) -> None:
    boxes = boxes_of(*[(index * 20, 0, index * 20 + 10, 10) for index in range(5)])  # no overlaps
    scores = np.array([0.3, 0.9, 0.1, 0.5, 0.7])
    assert nms(boxes, scores, np.zeros(5, np.int64), 0.5).tolist() == [1, 4, 3, 0, 2]


def test_iou_equal_to_threshold_is_kept(strategy: str) -> None:
    # B inside A with half its area: IoU exactly 0.5. Suppression needs IoU > threshold.
    boxes = boxes_of((0, 0, 4, 1), (0, 0, 2, 1))
    scores, classes = np.array([0.9, 0.8]), np.zeros(2, np.int64)
    assert nms(boxes, scores, classes, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, classes, 0.499).tolist() == [0]


def test_zero_area_boxes_give_no_nan_and_no_suppression(strategy: str) -> None:
    boxes = boxes_of((5, 5, 5, 5), (5, 5, 5, 5), (0, 0, 10, 0), (0, 0, 10, 10), (3, 3, 1, 1))  # last inverted
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    with np.errstate(all="raise"):
        kept = nms(boxes, scores, np.zeros(5, np.int64), 0.0)
    assert kept.tolist() == [0, 1, 2, 3, 4]


def test_zero_threshold_suppresses_any_overlap(strategy: str) -> None:
    boxes = boxes_of((0, 0, 10, 10), (9, 9, 20, 20), (10, 0, 20, 5))  # 2 only touches 0: no area shared
    kept = nms(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, np.int64), 0.0)
    assert kept.tolist() == [0, 2]


def test_max_output_keeps_the_best(strategy: str) -> None:
    boxes = boxes_of(*[(index * 20, 0, index * 20 + 10, 10) for index in range(5)])
    scores = np.array([0.3, 0.9, 0.1, 0.5, 0.7])
    assert nms(boxes, scores, np.zeros(5, np.int64), 0.5, max_output=2).tolist() == [1, 4]
    assert nms(boxes, scores, np.zeros(5, np.int64), 0.5, max_output=0).tolist() == []


def test_suppressed_box_does_not_suppress_others(strategy: str) -> None:
    """A chain: each box overlaps its neighbours only. Greedy keeps every other box, because a suppressed
    box must not suppress anything. 40 links also exceed the matrix strategy's fixed-point rounds, so its
    sequential fallback is exercised."""
    count = 40
    boxes = boxes_of(*[(index * 2, 0, index * 2 + 10, 10) for index in range(count)])  # IoU(i, i+1) = 0.67
    scores = np.linspace(1.0, 0.5, count)
    kept = nms(boxes, scores, np.zeros(count, np.int64), 0.6)
    assert kept.tolist() == list(range(0, count, 2))


def test_class_offsets_survive_negative_and_large_coordinates(strategy: str) -> None:
    boxes = boxes_of((-500, -500, -400, -400), (-500, -500, -400, -400), (9000, 9000, 9100, 9100))
    kept = nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), 0.5)
    assert kept.tolist() == [0, 1, 2]


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        nms(np.zeros((3, 5)), np.zeros(3), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms(np.zeros((3, 4)), np.zeros(2), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="class_ids"):
        nms(np.zeros((3, 4)), np.zeros(3), np.zeros(2), 0.5)


def reference_nms(boxes: list, scores: list, classes: list | None, threshold: float) -> list[int]:
    """Plain-Python greedy NMS: the definition, written for clarity rather than speed."""
    order = sorted(range(len(scores)), key=lambda index: (-scores[index], index))
    kept: list[int] = []
    for index in order:
        x1, y1, x2, y2 = boxes[index]
        area = max(x2 - x1, 0) * max(y2 - y1, 0)
        suppressed = False
        for other in kept:
            if classes is not None and classes[other] != classes[index]:
                continue
            ox1, oy1, ox2, oy2 = boxes[other]
            inter = max(min(x2, ox2) - max(x1, ox1), 0) * max(min(y2, oy2) - max(y1, oy1), 0)
            union = area + max(ox2 - ox1, 0) * max(oy2 - oy1, 0) - inter
            if inter > threshold * union:
                suppressed = True
                break
        if not suppressed:
            kept.append(index)
    return kept


box_rows = st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 30), st.integers(0, 30)).map(
    lambda row: (row[0], row[1], row[0] + row[2], row[1] + row[3])
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.tuples(box_rows, st.integers(0, 20), st.integers(0, 2)), max_size=40),
    threshold=st.sampled_from([0.0, 0.25, 0.375, 0.5, 0.75, 1.0]),  # exact in float32 and float64
    class_agnostic=st.booleans(),
)
def test_both_strategies_match_the_reference(rows, threshold, class_agnostic) -> None:
    # Integer coordinates and dyadic thresholds make every comparison exact, ties and equalities included.
    boxes = [row[0] for row in rows]
    scores = [row[1] / 20 for row in rows]
    classes = [row[2] for row in rows]
    expected = reference_nms(boxes, scores, None if class_agnostic else classes, threshold)
    arrays = (boxes_of(*boxes), np.array(scores, np.float64), np.array(classes, np.int64))
    for limit in (0, 10**6):
        original = nms_module._MATRIX_LIMIT
        nms_module._MATRIX_LIMIT = limit
        try:
            kept = nms(*arrays, threshold, class_agnostic=class_agnostic)
        finally:
            nms_module._MATRIX_LIMIT = original
        assert kept.tolist() == expected, f"strategy with limit {limit}"
