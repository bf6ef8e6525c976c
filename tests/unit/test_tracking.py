"""The ByteTrack tracker and the tracking stage: pinned ids on a synthetic sequence, the states, resets, config."""

from __future__ import annotations

import numpy as np
import pytest

from edgeinfer.config import ConfigError, parse_config
from edgeinfer.frame import Frame
from edgeinfer.instances import Instance, Masks
from edgeinfer.results import Classifications, Detection, Detections
from edgeinfer.tracking.bytetrack import ByteTracker
from edgeinfer.tracking.config import ByteTrackConfig
from edgeinfer.tracking.stage import TrackingStage


def box(cx: float, cy: float, w: float = 40, h: float = 80) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def crossing_sequence() -> list[list[tuple[str, list[float], float]]]:
    """60 frames: A walks right, B walks left 10 px lower (they cross around frame 25), C walks down and is
    hidden (no detection) in frames 30-39; a one-frame false positive in frame 12."""
    frames = []
    for f in range(60):
        objects = [("A", box(100 + 8 * f, 200), 0.9), ("B", box(500 - 8 * f, 210), 0.8)]
        if not 30 <= f < 40:
            objects.append(("C", box(700, 100 + 4 * f), 0.85))
        if f == 12:
            objects.append(("FP", box(900, 500), 0.6))
        frames.append(objects)
    return frames


def run(tracker: ByteTracker, frames, class_of=lambda name: 0):
    seen = []
    for objects in frames:
        boxes = np.array([b for _, b, _ in objects])
        scores = np.array([s for _, _, s in objects])
        classes = np.array([class_of(name) for name, _, _ in objects])
        ids = tracker.update(boxes, scores, classes).track_ids
        seen.append({name: int(i) for (name, _, _), i in zip(objects, ids, strict=True)})
    return seen


def test_crossing_objects_and_a_ten_frame_occlusion_keep_their_ids():
    seen = run(ByteTracker(), crossing_sequence())
    for f, ids in enumerate(seen):
        assert ids["A"] == 1 and ids["B"] == 2, (f, ids)  # through the crossing
        if "C" in ids:
            assert ids["C"] == 3, (f, ids)  # before and after 10 hidden frames
        assert ids.get("FP", 0) == 0  # one frame: tentative, never published, costs no id


def test_a_new_object_is_published_from_its_second_frame_with_the_next_id():
    frames = [[("A", box(100, 100), 0.9)]] * 3 + [[("A", box(100, 100), 0.9), ("D", box(400, 300), 0.9)]] * 3
    seen = run(ByteTracker(), frames)
    assert [ids.get("D") for ids in seen[3:]] == [0, 2, 2]
    assert all(ids["A"] == 1 for ids in seen)


def test_low_score_detections_keep_a_track_but_never_start_one():
    frames = [[("A", box(100 + 5 * f, 100), 0.9 if f < 5 or f >= 10 else 0.15)] for f in range(15)]
    frames += [[("A", box(175, 100), 0.9), ("L", box(500, 300), 0.15)]] * 3
    seen = run(ByteTracker(), frames)
    assert all(ids["A"] == 1 for ids in seen)  # the second (low-score) pass kept it in frames 5-9
    assert all(ids["L"] == 0 for ids in seen[15:])


def test_a_track_lost_longer_than_max_lost_frames_comes_back_with_a_new_id():
    config = ByteTrackConfig(max_lost_frames=5)
    gap = [[]] * 7
    frames = [[("A", box(100, 100), 0.9)]] * 3 + gap + [[("A", box(100, 100), 0.9)]] * 3
    seen = run(ByteTracker(config), frames)
    assert [ids.get("A") for ids in seen if ids] == [1, 1, 1, 0, 2, 2]
    short = [[("A", box(100, 100), 0.9)]] * 3 + [[]] * 4 + [[("A", box(100, 100), 0.9)]] * 2
    assert [ids.get("A") for ids in run(ByteTracker(config), short) if ids] == [1, 1, 1, 1, 1]


def test_objects_of_different_classes_never_share_a_track():
    frames = [[("cat", box(100, 100), 0.9)]] * 3 + [[("dog", box(100, 100), 0.9)]] * 3
    classes = {"cat": 15, "dog": 16}
    seen = run(ByteTracker(), frames, class_of=classes.get)
    assert [ids.get("cat", ids.get("dog")) for ids in seen] == [1, 1, 1, 0, 2, 2]
    seen = run(ByteTracker(ByteTrackConfig(per_class=False)), frames, class_of=classes.get)
    assert [ids.get("cat", ids.get("dog")) for ids in seen] == [1] * 6


def frame(source: str, seq: int, stream: int = 1) -> Frame:
    return Frame(source, seq, np.zeros((4, 4, 3), np.uint8), 0.0, 0.0, stream=stream)


def test_the_stage_tracks_each_source_apart_and_starts_over_on_a_new_stream():
    stage = TrackingStage(ByteTrackConfig())
    people = [Detection(0, "person", 0.9, tuple(box(100, 100))), Detection(0, "person", 0.8, tuple(box(300, 100)))]
    for seq in range(3):
        left = stage.apply(frame("left", seq), Detections(people)).detections
        right = stage.apply(frame("right", seq), Detections(people[:1])).detections
    assert [d.track_id for d in left] == [1, 2] and [d.track_id for d in right] == [1]
    assert all(isinstance(d, Instance) for d in left) and left[0].track_age == 3
    assert left[0].to_dict()["track_id"] == 1 and left[0].to_dict()["track_age"] == 3
    moved = [Detection(0, "person", 0.9, tuple(box(600, 300)))]
    assert stage.apply(frame("left", 3, stream=2), Detections(moved))[0].track_id == 1  # reconnect: from 1 again
    assert stage.resets == 1
    stage.apply(frame("right", 0), Detections(people[:1]))  # the sender restarted its sequence numbers
    assert stage.resets == 2
    assert stage.counters()["tracks"]["left"]["confirmed"] == 1


def test_unconfirmed_detections_are_not_published_and_payload_types_are_kept():
    stage = TrackingStage(ByteTrackConfig())
    stage.apply(frame("cam", 0), Detections([]))
    new = stage.apply(frame("cam", 1), Masks([Instance(2, "car", 0.9, (0, 0, 10, 10))]))
    assert type(new) is Masks and len(new) == 0
    assert type(stage.apply(frame("cam", 2), Masks([Instance(2, "car", 0.9, (0, 0, 10, 10))]))) is Masks
    classes = Classifications([])
    assert stage.apply(frame("cam", 3), classes) is classes  # nothing to track: passed through


YAML = """
sources: [{id: cam, type: synthetic}]
models:
  - id: det
    path: m.onnx
    sources: [cam]
{extra}
"""


def test_tracker_config_is_off_by_default_and_checked():
    config = parse_config(YAML.replace("{extra}", ""))
    assert config.models[0].tracker is None
    config = parse_config(YAML.replace("{extra}", "    tracker: {type: bytetrack, max_lost_frames: 90}"))
    assert config.models[0].tracker.max_lost_frames == 90
    with pytest.raises(ConfigError, match=r"models\[0\]\.tracker.*low_threshold"):
        parse_config(YAML.replace("{extra}", "    tracker: {low_threshold: 0.6, high_threshold: 0.5}"))
    with pytest.raises(ConfigError, match=r"tracker.*type.*bytetrack"):
        parse_config(YAML.replace("{extra}", "    tracker: {type: sort}"))
    with pytest.raises(ConfigError, match=r"tracker: tracks boxes"):
        parse_config(YAML.replace("{extra}", "    decoder: {type: classify}\n    tracker: {}"))


def test_a_detection_with_a_nan_box_is_dropped_and_counted_and_does_not_poison_tracks():
    stage = TrackingStage(ByteTrackConfig())
    car = Detection(2, "car", 0.9, tuple(box(100, 100)))
    broken = Detection(2, "car", 0.9, (float("nan"), 0.0, 10.0, 10.0))
    for seq in range(5):
        out = stage.apply(frame("cam", seq), Detections([car, broken] if seq == 2 else [car]))
        assert [d.track_id for d in out] == [1]
    assert stage.dropped_non_finite == 1 and stage.counters()["dropped_non_finite"] == 1
