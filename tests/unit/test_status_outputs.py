"""The pieces of the http and annotated outputs on their own: the drop-oldest hand-off, the live view's
encode-only-while-watched rule, drawing of the optional payload parts, video rotation and the config errors."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgeinfer.config import ConfigError, parse_config
from edgeinfer.draw import annotate
from edgeinfer.frame import Frame
from edgeinfer.handoff import DropOldestWorker
from edgeinfer.instances import Instance, InstanceMask, Masks
from edgeinfer.outputs.annotated import AnnotatedOutput
from edgeinfer.outputs.schema import AnnotatedOutputConfig
from edgeinfer.results import Detection, Detections, Result
from edgeinfer.runtime import RuntimeContext
from edgeinfer.web.live import LiveViews


def result(seq: int, image: np.ndarray, detections=(), source: str = "cam") -> Result:
    frame = Frame(source=source, seq=seq, image=image, mono=time.monotonic(), wall=time.time())
    return Result.for_frame("det", frame, "ok", Detections(list(detections)), age_ms=5.0, infer_ms=2.0)


def test_drop_oldest_worker_keeps_the_newest_and_counts_the_rest():
    started, release = threading.Event(), threading.Event()
    handled = []

    def handle(item):
        started.set()
        release.wait(5)
        handled.append(item)

    worker = DropOldestWorker("test", handle, depth=2)
    worker.start()
    worker.offer(0)
    assert started.wait(5)  # item 0 is being handled: the queue is empty again
    for item in range(1, 6):
        worker.offer(item)  # never blocks although the handler does
    assert worker.dropped == 3
    release.set()
    assert worker.close(5)
    assert handled == [0, 4, 5] and worker.handled == 3 and worker.offered == 6


def test_drop_oldest_worker_survives_a_failing_item():
    worker = DropOldestWorker("test", lambda item: 1 / item, depth=4)
    worker.start()
    for item in (1, 0, 2):
        worker.offer(item)
    worker.close(5)
    assert worker.handled == 2 and worker.errors == 1 and "ZeroDivisionError" in worker.last_error


def test_live_view_encodes_only_while_watched():
    encoded = threading.Event()
    views = LiveViews(fps=50, jpeg_quality=80, max_width=320, on_encoded=lambda key: encoded.set())
    views.start()
    try:
        image = np.full((120, 480, 3), 90, np.uint8)
        for seq in range(5):
            views.offer(result(seq, image))
        time.sleep(0.3)
        assert views.frame(("det", "cam")) == (None, 0), "encoded although nobody watched"
        assert views.add_viewer(("det", "cam"))
        assert encoded.wait(5)
        jpeg, version = views.frame(("det", "cam"))
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert version == 1 and decoded.shape == (80, 320, 3)  # scaled down to view_max_width
        assert views.views()[0]["last_seq"] == 4  # the newest result, not the first
        assert not views.add_viewer(("det", "nope"))
    finally:
        views.close()


def test_drawing_shows_track_ids_masks_and_keypoints_when_the_payload_has_them():
    image = np.zeros((200, 300, 3), np.uint8)
    plain = Detection(class_id=0, label="person", score=0.9, bbox=(20.0, 30.0, 120.0, 180.0))
    # an instance mask as the segment decoders keep it: the crop that holds it and its offset
    mask = InstanceMask(x0=200, y0=60, crop=np.ones((40, 60), bool), height=200, width=300)
    rich = Instance(0, "person", 0.9, (180.0, 40.0, 280.0, 190.0), track_id=7, track_age=3, mask=mask,
                    keypoints=np.array([[150.0, 20.0, 0.9], [160.0, 20.0, 0.1]], np.float32))
    drawn = annotate(SimpleNamespace(frame=SimpleNamespace(image=image), payload=Masks([plain, rich]),
                                     source="cam", model="det", seq=1, status="ok", age_ms=3.0))
    assert image.max() == 0, "the frame other outputs see was drawn on"
    assert drawn[180, 70].any()  # the plain box's bottom edge
    assert drawn[80, 230].any()  # inside the mask
    assert drawn[20, 150].any() and not drawn[20, 160].any()  # a confident keypoint; one below 0.5 not drawn


def test_annotated_video_rotates_by_size_and_keeps_every_frame(tmp_path):
    config = AnnotatedOutputConfig(dir=tmp_path, rotate_mb=0.05, queue=100, codec="MJPG", container="avi")
    output = AnnotatedOutput(config, "annotated")
    output.open(RuntimeContext())
    rng = np.random.default_rng(0)
    for seq in range(40):
        output.publish(result(seq, rng.integers(0, 255, (96, 128, 3), np.uint8)))
    output.close()
    assert output.counters()["dropped"] == 0
    files = sorted(tmp_path.glob("*.avi"))
    assert len(files) > 1 and files == sorted(output.files)
    counts = []
    for path in files:
        cap = cv2.VideoCapture(str(path))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        counts.append(n)
    assert sum(counts) == 40 and all(counts)


CONFIG = """
sources: [{id: cam, type: synthetic}]
models: [{id: det, path: m.onnx, sources: [cam]}]
outputs: [%s]
"""


@pytest.mark.parametrize("output, key, words", [
    ("{type: web}", "outputs[0]", ["http", "annotated"]),
    ("{type: http, token: abcdefgh, token_file: t}", "outputs[0]", ["token or token_file"]),
    ("{type: http, port: 70000}", "outputs[0].port", ["65535"]),
    ("{type: http, token: short}", "outputs[0].token", ["8"]),
    ("{type: annotated, dir: out, mode: snapshots}", "outputs[0]", ["classes"]),
    ("{type: annotated, dir: out, mode: gif}", "outputs[0].mode", ["video", "snapshots"]),
    ("{type: annotated}", "outputs[0].dir", ["missing"]),
])
def test_config_errors_name_the_key_and_the_allowed_values(output, key, words):
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG % output)
    text = "\n".join(str(p) for p in info.value.problems)
    assert key in text, text
    assert all(word in text for word in words), text


def test_check_names_an_unreadable_token_file_and_a_dir_that_is_a_file(tmp_path):
    from edgeinfer.preflight import load_config

    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG % f"{{type: http, token_file: {tmp_path / 'missing'}}}, "
                              f"{{type: annotated, dir: {tmp_path / 'a-file' / 'videos'}}}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = "\n".join(str(p) for p in info.value.problems)
    assert "outputs[0].token_file: cannot read a token" in text, text
    assert "outputs[1].dir:" in text and "is not a folder" in text, text


def test_annotated_video_rotates_by_time_and_by_frame_size(tmp_path):
    config = AnnotatedOutputConfig(dir=tmp_path, rotate_s=0.05, codec="MJPG", container="avi")
    output = AnnotatedOutput(config, "annotated")
    output.open(RuntimeContext())
    sizes = [(96, 128), (96, 128), (120, 160)]  # the third frame changes size: a file holds one size
    for seq, (height, width) in enumerate(sizes):
        output.publish(result(seq, np.full((height, width, 3), 50 * seq, np.uint8)))
        deadline = time.monotonic() + 5
        while output.frames_written <= seq and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1 if seq == 0 else 0.0)  # past rotate_s before the second frame, not before the third
    output.close()
    files = sorted(output.files)
    assert len(files) == 3, files
    shapes = []
    for path in files:
        cap = cv2.VideoCapture(str(path))
        ok, image = cap.read()
        cap.release()
        assert ok, path
        shapes.append(image.shape[:2])
    assert sorted(shapes) == sorted(sizes)
