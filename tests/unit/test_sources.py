"""Capture sources against real files, folders, sockets and the real frame mailbox."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from edgeinfer.config import SourceConfig
from edgeinfer.mailbox import FrameSlots
from edgeinfer.sources import SOURCE_TYPES, ReconnectConfig, Source, SourceConfigBase, SourceError, create_source
from edgeinfer.sources.camera import CameraSource
from edgeinfer.sources.gstreamer import GStreamerSource
from edgeinfer.sources.images import ImagesSource
from edgeinfer.sources.schema import (
    CameraSourceConfig,
    GStreamerSourceConfig,
    ImagesSourceConfig,
    RtspSourceConfig,
    SyntheticSourceConfig,
    VideoSourceConfig,
    redact_url,
)
from edgeinfer.sources.stream import RtspSource, _CaptureOptionsGate, _options_with_transport
from edgeinfer.sources.synthetic import SyntheticSource
from edgeinfer.sources.video import VideoSource
from support.frames import Consumer, RecordingReporter, wait_until

SOURCE_CONFIGS = TypeAdapter(SourceConfig)


# ---- helpers ---------------------------------------------------------------------------------------------


@pytest.fixture
def mailbox():
    """(slots, consumer factory); closes everything at the end."""
    made: list[Consumer] = []
    slots = FrameSlots(["cam"])

    def consumer(delay_s: float = 0.0) -> Consumer:
        made.append(Consumer(slots, delay_s))
        return made[-1]

    yield slots, consumer
    slots.close()
    for c in made:
        c.close()


def index_image(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """A frame whose index survives JPEG: left half = index // 16, right half = index % 16, as levels."""
    image = np.empty((height, width, 3), np.uint8)
    image[:, : width // 2] = 8 + 16 * (index // 16)
    image[:, width // 2 :] = 8 + 16 * (index % 16)
    return image


def decode_index(image: np.ndarray) -> int:
    width = image.shape[1]
    high = round((float(image[:, : width // 4].mean()) - 8) / 16)
    low = round((float(image[:, -width // 4 :].mean()) - 8) / 16)
    return 16 * high + low


def make_video(path: Path, count: int, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    if not writer.isOpened():
        raise RuntimeError("this OpenCV cannot write MJPG/AVI")
    for i in range(count):
        writer.write(index_image(i))
    writer.release()
    # The test relies on the file decoding back to the same frames: check that first.
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        decoded.append(decode_index(image))
    stated_fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    if decoded != list(range(count)) or abs(stated_fps - fps) > 0.01:
        raise RuntimeError(f"test video does not decode back: {decoded}, fps {stated_fps}")
    return path


# ---- config ----------------------------------------------------------------------------------------------


def test_every_type_key_parses_to_its_model_and_has_a_plugin(tmp_path: Path) -> None:
    examples = {
        "video": {"path": str(tmp_path / "a.mp4"), "loop": True},
        "images": {"path": str(tmp_path), "pattern": "*.png"},
        "camera": {"device": "/dev/video0", "width": 1280, "fourcc": "MJPG"},
        "rtsp": {"url": "rtsp://10.0.0.5:554/stream1", "transport": "udp"},
        "gstreamer": {"pipeline": "videotestsrc ! videoconvert ! appsink drop=true"},
        "synthetic": {"frames": 5},
        "zmq": {"endpoint": "tcp://*:5555", "pattern": "pull"},
        "ros2": {"topic": "/camera/image_raw/compressed", "transport": "compressed"},
    }
    assert set(examples) == set(SOURCE_TYPES)
    for kind, fields in examples.items():
        config = SOURCE_CONFIGS.validate_python({"type": kind, "id": f"src_{kind}", **fields})
        assert config.type == kind
        assert isinstance(config, SourceConfigBase)
        source = create_source(config, FrameSlots([config.id]), RecordingReporter())
        assert type(source) is SOURCE_TYPES[kind]
        assert source.id == f"src_{kind}"
    camera = SOURCE_CONFIGS.validate_python({"type": "camera", "id": "c", "device": "2"})
    assert camera.device == 2
    assert camera.reconnect == ReconnectConfig(initial_s=0.5, max_s=10.0, factor=2.0)


@pytest.mark.parametrize(
    ("data", "where", "says"),
    [
        ({"type": "synthetic", "id": "9lives"}, "id", "pattern"),
        ({"type": "synthetic", "id": "a b"}, "id", "pattern"),
        ({"type": "synthetic", "id": "s", "colour": "red"}, "colour", "Extra inputs"),
        ({"type": "webcam", "id": "s"}, "", "does not match any of the expected tags"),
        ({"type": "rtsp", "id": "r", "url": "ftp://host/x"}, "url", "rtsp://"),
        ({"type": "rtsp", "id": "r", "url": "rtsp:///x"}, "url", "names no host"),
        ({"type": "rtsp", "id": "r", "url": "rtsp://h/x", "transport": "quic"}, "transport", "'tcp'"),
        ({"type": "gstreamer", "id": "g", "pipeline": "videotestsrc ! autovideosink"}, "pipeline", "appsink"),
        ({"type": "gstreamer", "id": "g", "pipeline": "appsink"}, "pipeline", "source elements"),
        ({"type": "camera", "id": "c", "device": "video0"}, "device", "device path"),
        ({"type": "camera", "id": "c", "device": -1}, "device", "0 or more"),
        ({"type": "camera", "id": "c", "device": 0, "fourcc": "MJPEG"}, "fourcc", "four-character"),
        ({"type": "images", "id": "i", "path": "/x", "pattern": "../*.png"}, "pattern", "relative"),
        ({"type": "synthetic", "id": "s", "frames": 0}, "frames", "greater than or equal to 1"),
        ({"type": "synthetic", "id": "s", "min_fps": 0}, "min_fps", "greater than or equal to 0.001"),
        ({"type": "synthetic", "id": "s", "reconnect": {"initial_s": 5, "max_s": 1}}, "reconnect",
         "must be >= initial_s"),
    ],
)
def test_bad_config_is_rejected_with_a_clear_message(data: dict, where: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SOURCE_CONFIGS.validate_python(data)
    errors = caught.value.errors()
    locations = [".".join(str(part) for part in e["loc"]) for e in errors]
    assert any(where in loc for loc in locations), locations
    assert any(says in e["msg"] for e in errors), [e["msg"] for e in errors]


def test_stream_url_password_is_redacted() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.2:554/s?x=1") == "rtsp://admin:***@10.0.0.2:554/s?x=1"
    assert redact_url("rtsp://10.0.0.2/s") == "rtsp://10.0.0.2/s"
    with pytest.raises(ValidationError) as caught:
        RtspSourceConfig(id="r", url="rtsp://admin:hunter2@10.0.0.2:55x4/s")
    assert "hunter2" not in str(caught.value)
    source = RtspSource(RtspSourceConfig(id="r", url="rtsp://admin:hunter2@h/s"), FrameSlots(["r"]))
    assert "hunter2" not in source.describe()


# ---- video files -----------------------------------------------------------------------------------------


def test_video_delivers_every_frame_in_order_to_a_slow_consumer(tmp_path: Path, mailbox) -> None:
    slots, consumer = mailbox
    path = make_video(tmp_path / "clip.avi", 30, fps=25)
    reporter = RecordingReporter()
    source = VideoSource(VideoSourceConfig(id="cam", path=path), slots, reporter)
    slow = consumer(delay_s=0.005)
    before = time.time()
    source.start()
    assert slow.wait_finished(10), "the consumer never saw the end of the file"
    assert source.join(2)
    assert [f.seq for f in slow.frames] == list(range(30))
    assert [decode_index(f.image) for f in slow.frames] == list(range(30))
    assert slots.drops["cam"] == 0
    monos = [f.mono for f in slow.frames]
    assert monos == sorted(monos)
    assert all(before <= f.wall <= time.time() for f in slow.frames)
    assert all(f.source == "cam" and f.image.shape == (48, 64, 3) for f in slow.frames)
    stats = source.stats()
    assert stats["state"] == "ended"
    assert (stats["frames"], stats["bad_frames"], stats["last_seq"]) == (30, 0, 29)
    assert reporter.alive_count == 30
    assert reporter.faults == []


def test_video_loop_keeps_counting(tmp_path: Path, mailbox) -> None:
    slots, consumer = mailbox
    path = make_video(tmp_path / "clip.avi", 10, fps=25)
    source = VideoSource(VideoSourceConfig(id="cam", path=path, loop=True), slots)
    reader = consumer()
    source.start()
    assert reader.wait_for(25, timeout=10)
    assert source.stop() is True
    frames = reader.frames[:25]
    assert [f.seq for f in frames] == list(range(25))
    assert [decode_index(f.image) for f in frames] == [i % 10 for i in range(25)]
    assert [f.stream for f in frames] == [1 + i // 10 for i in range(25)]  # each pass a new stream: trackers reset
    assert source.stats()["state"] == "stopped"


def test_realtime_video_is_paced_at_file_fps_and_drops_for_a_slow_consumer(tmp_path: Path, mailbox) -> None:
    slots, consumer = mailbox
    count, fps = 40, 40.0
    path = make_video(tmp_path / "clip.avi", count, fps=fps)
    source = VideoSource(VideoSourceConfig(id="cam", path=path, realtime=True), slots)
    slow = consumer(delay_s=0.06)  # ~16 fps < 40 fps
    started = time.monotonic()
    source.start()
    assert source.join(5)
    elapsed = time.monotonic() - started
    assert slow.wait_finished(5)
    assert source.file_fps == pytest.approx(fps)
    # 40 frames at 40 fps: the last is due 0.975 s after the first.
    assert 0.9 <= elapsed <= 1.5, elapsed
    frames = slow.frames
    assert 0 < len(frames) < count
    assert slots.drops["cam"] > 0
    assert len(frames) + slots.drops["cam"] == count
    # Each frame was captured on its slot of the schedule; lateness does not add up over the file.
    first = frames[0]
    for frame in frames:
        due = first.mono + (frame.seq - first.seq) / fps
        assert abs(frame.mono - due) < 0.05, (frame.seq, frame.mono - due)
    assert source.stats()["frames"] == count


def test_missing_or_undecodable_video_fails_fast(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    source = VideoSource(VideoSourceConfig(id="front", path=missing), FrameSlots(["front"]))
    problems = source.preflight()
    assert len(problems) == 1 and problems[0].startswith("path: ") and str(missing) in problems[0]
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        source.start()
    assert time.monotonic() - started < 1.0
    assert "'front'" in str(caught.value) and str(missing) in str(caught.value)
    assert source.stats()["state"] == "failed"
    assert source.stop() is True
    assert VideoSource.preflight_config(source.config) == problems  # for `edgeinfer check`

    not_a_video = tmp_path / "notes.avi"
    not_a_video.write_text("this is text, not a video\n" * 100)
    source = VideoSource(VideoSourceConfig(id="front", path=not_a_video), FrameSlots(["front"]))
    assert source.preflight() and str(not_a_video) in source.preflight()[0]
    with pytest.raises(SourceError, match="front"):
        source.start()


# ---- image folders ---------------------------------------------------------------------------------------


def test_image_folder_in_natural_order_skips_and_counts_a_bad_image(tmp_path: Path, mailbox) -> None:
    slots, consumer = mailbox
    names = ["frame_1.png", "frame_2.jpg", "frame_3.png", "frame_4.bmp", "frame_10.png"]
    for position, name in enumerate(names):
        if name == "frame_3.png":
            (tmp_path / name).write_bytes(b"\x89PNG but truncated garbage")
        else:
            assert cv2.imwrite(str(tmp_path / name), index_image(position))
    cv2.imwrite(str(tmp_path / "frame_5.png"), index_image(4)[:, :, 0])  # gray file: read as BGR
    (tmp_path / "notes.txt").write_text("not an image")
    reporter = RecordingReporter()
    source = ImagesSource(ImagesSourceConfig(id="cam", path=tmp_path), slots, reporter)
    assert source.preflight() == []
    reader = consumer(delay_s=0.002)
    source.start()
    assert reader.wait_finished(10)
    # Natural order: 1, 2, 3 (bad), 4, 5, 10; a bad image keeps its place in the numbering.
    assert [f.seq for f in reader.frames] == [0, 1, 3, 4, 5]
    assert [decode_index(f.image) for f in reader.frames] == [0, 1, 3, 4, 4]
    assert all(f.image.shape == (48, 64, 3) for f in reader.frames)
    stats = source.stats()
    assert (stats["state"], stats["frames"], stats["bad_frames"]) == ("ended", 5, 1)
    assert "frame_3.png" in stats["last_error"]
    assert len(reporter.faults) == 1 and "frame_3.png" in reporter.faults[0][1]
    assert slots.drops["cam"] == 0


def test_image_folder_problems(tmp_path: Path) -> None:
    missing = ImagesSource(ImagesSourceConfig(id="a", path=tmp_path / "gone"), FrameSlots(["a"]))
    assert missing.preflight()[0].startswith("path: no such folder")
    with pytest.raises(SourceError, match="'a'"):
        missing.start()
    (tmp_path / "readme.txt").write_text("no images here")
    cv2.imwrite(str(tmp_path / "x.png"), index_image(1))
    empty = ImagesSource(ImagesSourceConfig(id="b", path=tmp_path, pattern="*.jpg"), FrameSlots(["b"]))
    assert empty.preflight()[0].startswith("pattern: no image matches '*.jpg'")
    with pytest.raises(SourceError, match="'b'"):
        empty.start()


def test_image_folder_loop_with_only_bad_images_fails_instead_of_spinning(tmp_path: Path, mailbox) -> None:
    slots, _ = mailbox
    (tmp_path / "a.png").write_bytes(b"broken")
    source = ImagesSource(ImagesSourceConfig(id="cam", path=tmp_path, loop=True), slots)
    source.start()
    assert source.join(2)
    assert source.stats()["state"] == "failed"
    assert slots.finished  # the worker is told the source is over


# ---- synthetic -------------------------------------------------------------------------------------------


def test_synthetic_finite_run_delivers_its_count(mailbox) -> None:
    slots, consumer = mailbox
    config = SyntheticSourceConfig(id="cam", width=96, height=64, fps=200, frames=20)
    source = SyntheticSource(config, slots)
    reader = consumer(delay_s=0.002)
    started = time.monotonic()
    source.start()
    assert reader.wait_finished(5)
    assert time.monotonic() - started >= 19 / 200  # paced
    assert [f.seq for f in reader.frames] == list(range(20))
    assert all(f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8 for f in reader.frames)
    # The pattern moves, and each frame is its own array (a held frame is never overwritten).
    for before, after in zip(reader.frames[:-1], reader.frames[1:], strict=True):
        assert not np.array_equal(before.image, after.image)
        assert not np.shares_memory(before.image, after.image)
    assert source.stats()["state"] == "ended"


def test_endless_synthetic_is_live_paced_and_stops_quickly(mailbox) -> None:
    slots, consumer = mailbox
    source = SyntheticSource(SyntheticSourceConfig(id="cam", width=64, height=48, fps=50), slots)
    assert not source.finite and not source.wait_for_consumer
    reader = consumer()
    earlier = {t for t in threading.enumerate() if t.name == "source:cam"}  # an earlier test's, still ending
    source.start()
    time.sleep(1.0)
    stats = source.stats()
    assert stats["state"] == "running"
    assert 40 <= stats["fps"] <= 60, stats
    started = time.monotonic()
    assert source.stop() is True
    assert time.monotonic() - started < 0.5
    assert source.stats()["state"] == "stopped"
    assert not any(t.name == "source:cam" and t not in earlier for t in threading.enumerate())
    assert len(reader.frames) >= 40


# ---- the base class: bad frames, blocking reads, reconnects -----------------------------------------------


class ScriptedSource(Source):
    """Plays a list of images (or exceptions) from `_read`; finite or live."""

    def __init__(self, config, sink, reporter=None, script=(), finite=True, open_failures=0):
        super().__init__(config, sink, reporter)
        self.script = list(script)
        self._finite = finite
        self.open_failures = open_failures
        self.open_times: list[float] = []
        self.closed = 0
        self._position = 0

    @property
    def finite(self) -> bool:
        return self._finite

    def _open(self) -> None:
        self.open_times.append(time.monotonic())
        if self.open_failures > 0:
            self.open_failures -= 1
            raise ConnectionRefusedError("connection refused")
        self._position = 0

    def _read(self):
        if self._position >= len(self.script):
            return None
        item = self.script[self._position]
        self._position += 1
        if isinstance(item, Exception):
            raise item
        return item

    def _close(self) -> None:
        self.closed += 1


def test_bad_frames_are_dropped_and_counted_gray_and_bgra_converted(mailbox) -> None:
    slots, consumer = mailbox
    good = np.full((8, 8, 3), 100, np.uint8)
    gray = np.full((8, 8), 50, np.uint8)
    bgra = np.dstack([good, np.full((8, 8), 255, np.uint8)])
    script = [good, np.zeros((0, 8, 3), np.uint8), good.astype(np.float32), gray, bgra,
              np.zeros((8, 8, 3, 2), np.uint8), gray[:, :, None], good]
    reporter = RecordingReporter()
    source = ScriptedSource(SourceConfigBase(id="cam"), slots, reporter, script=script)
    reader = consumer()
    source.start()
    assert reader.wait_finished(5)
    assert [f.seq for f in reader.frames] == [0, 3, 4, 6, 7]
    assert all(f.image.shape == (8, 8, 3) and f.image.dtype == np.uint8 for f in reader.frames)
    assert np.all(reader.frames[1].image == 50) and np.all(reader.frames[2].image == 100)
    stats = source.stats()
    assert (stats["bad_frames"], stats["frames"]) == (3, 5)
    assert [m.split(":")[0] for _, m in reporter.faults] == ["bad frame 1", "bad frame 2", "bad frame 5"]
    assert "float32" in reporter.faults[1][1]


def test_stop_returns_within_timeout_while_a_read_is_blocked(mailbox) -> None:
    slots, _ = mailbox
    entered, release = threading.Event(), threading.Event()

    class StuckSource(ScriptedSource):
        def _read(self):
            entered.set()
            release.wait(30)  # like OpenCV waiting on a silent server
            return None

    source = StuckSource(SourceConfigBase(id="cam"), slots, finite=False)
    source.start()
    assert entered.wait(2)
    started = time.monotonic()
    finished = source.stop(timeout=2.0)
    assert time.monotonic() - started < 2.3
    assert finished is False
    assert source.stats()["state"] == "stopped"
    release.set()  # the read returns: the thread closes the device and ends on its own
    assert source.join(2)
    assert source.closed >= 1
    assert source.stats()["state"] == "stopped"


def test_live_source_reconnects_with_exponential_backoff(mailbox, caplog) -> None:
    slots, consumer = mailbox
    frame = np.full((4, 4, 3), 7, np.uint8)
    config = SourceConfigBase(id="cam", reconnect=ReconnectConfig(initial_s=0.1, max_s=0.3, factor=2.0))
    reporter = RecordingReporter()
    # Two refused opens, then every open yields 3 frames and the stream ends (server dropped us).
    source = ScriptedSource(config, slots, reporter, script=[frame] * 3, finite=False, open_failures=2)
    reader = consumer()
    with caplog.at_level(logging.WARNING, logger="edgeinfer.sources"):
        source.start()
        assert wait_until(lambda: source.stats()["frames"] >= 9, timeout=5)
        assert source.stop() is True
    gaps = np.diff(source.open_times)
    # Refused, wait 0.1; refused, wait 0.2; opens; after frames flowed the backoff restarts at 0.1.
    assert gaps[0] == pytest.approx(0.1, abs=0.06)
    assert gaps[1] == pytest.approx(0.2, abs=0.06)
    assert gaps[2] == pytest.approx(0.1, abs=0.06)
    stats = source.stats()
    # Numbering continues across reconnects (a live source's unread frames are overwritten: drops).
    seqs = [f.seq for f in reader.frames]
    assert seqs == sorted(set(seqs)) and seqs[-1] > 3
    streams = [f.stream for f in reader.frames]  # each reconnect starts a new stream (trackers reset on it)
    assert streams == sorted(streams) and streams[0] == 1 and streams[-1] >= 3
    assert stats["last_seq"] == stats["frames"] - 1
    assert wait_until(lambda: len(reader.frames) + slots.drops["cam"] == stats["frames"], timeout=1)
    assert stats["failed_opens"] == 2
    assert stats["reconnects"] == len(source.open_times) - 2
    assert stats["reconnects"] >= 3
    assert stats["state"] == "stopped"
    assert any("connection refused" in m for _, m in reporter.faults)
    assert any("stream ended" in m for _, m in reporter.faults)
    # Bounded-rate logging: one message per kind of problem in this short run, not one per attempt.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("cannot open" in m for m in warnings) == 1
    assert sum("stream ended" in m for m in warnings) == 1


def test_unexpected_exception_in_a_finite_read_fails_the_source_and_ends_the_sink(mailbox) -> None:
    slots, consumer = mailbox
    script = [np.zeros((4, 4, 3), np.uint8), OSError("disk gone")]
    reporter = RecordingReporter()
    source = ScriptedSource(SourceConfigBase(id="cam"), slots, reporter, script=script)
    reader = consumer()
    source.start()
    assert reader.wait_finished(5)
    stats = source.stats()
    assert stats["state"] == "failed" and "disk gone" in stats["last_error"]
    assert len(reader.frames) == 1
    assert any("disk gone" in m for _, m in reporter.faults)


# ---- live device sources without a device ----------------------------------------------------------------


def test_rtsp_without_server_keeps_reconnecting_and_stops_quickly(mailbox) -> None:
    slots, _ = mailbox
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = RtspSourceConfig(id="cam", url=f"rtsp://127.0.0.1:{port}/none",
                              reconnect=ReconnectConfig(initial_s=0.05, max_s=0.1))
    source = RtspSource(config, slots, RecordingReporter())
    assert source.preflight() == []
    source.start()  # a live source never fails at start: the server may come later
    assert wait_until(lambda: source.stats()["failed_opens"] >= 3, timeout=5)
    stats = source.stats()
    assert stats["state"] == "reconnecting" and stats["frames"] == 0
    assert f"127.0.0.1:{port}" in stats["last_error"]
    started = time.monotonic()
    assert source.stop() is True
    assert time.monotonic() - started < 2.0


def test_capture_options_env_keeps_user_options_and_separates_transports() -> None:
    assert _options_with_transport(None, "tcp") == "rtsp_transport;tcp"
    assert (_options_with_transport("stimeout;100|rtsp_transport;udp", "tcp")
            == "stimeout;100|rtsp_transport;tcp")
    gate = _CaptureOptionsGate()
    saved = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    order: list[str] = []
    try:
        with gate.options("tcp"):
            assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"].endswith("rtsp_transport;tcp")

            def open_udp() -> None:
                with gate.options("udp"):
                    order.append("udp opened")

            other = threading.Thread(target=open_udp)
            other.start()
            time.sleep(0.2)
            order.append("tcp still opening")
        other.join(2)
        assert order == ["tcp still opening", "udp opened"]
        assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"].endswith("rtsp_transport;udp")
    finally:
        if saved is None:
            os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
        else:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = saved


def test_missing_camera_is_a_preflight_problem_but_the_source_waits_for_it(mailbox) -> None:
    slots, _ = mailbox
    free_index = next(i for i in range(64, 128) if not Path(f"/dev/video{i}").exists())
    source = CameraSource(CameraSourceConfig(id="cam", device=free_index,
                                             reconnect=ReconnectConfig(initial_s=0.05, max_s=0.1)), slots)
    problems = source.preflight()
    assert len(problems) == 1 and problems[0].startswith("device: no camera at /dev/video")
    source.start()
    assert wait_until(lambda: source.stats()["failed_opens"] >= 2, timeout=5)
    assert source.stats()["state"] == "reconnecting"
    assert source.stop() is True


def test_gstreamer_needs_an_opencv_built_with_it(mailbox) -> None:
    slots, _ = mailbox
    config = GStreamerSourceConfig(id="cam", pipeline="videotestsrc num-buffers=5 ! videoconvert ! appsink")
    source = GStreamerSource(config, slots)
    if cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        assert source.preflight() == []
    else:
        problems = source.preflight()
        assert len(problems) == 1 and "built without GStreamer" in problems[0]
        with pytest.raises(SourceError, match="'cam'"):
            source.start()
