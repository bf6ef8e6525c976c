"""A frame keeps the header it arrived with (a ROS image, a ZeroMQ frame): stamp, sequence number, frame id."""

from __future__ import annotations

import time

import numpy as np

from edgeinfer.frame import Captured
from edgeinfer.mailbox import FrameSlots
from edgeinfer.sources.base import Source, SourceConfigBase


class ReplaySource(Source):
    """A finite source that returns prepared reads."""

    def __init__(self, config, sink, reads):
        super().__init__(config, sink)
        self._reads = list(reads)

    @property
    def finite(self) -> bool:
        return True

    def _open(self) -> None:
        pass

    def _read(self):
        return self._reads.pop(0) if self._reads else None

    def _close(self) -> None:
        pass


def _frames(reads, frame_id=None):
    slots = FrameSlots(["cam"])
    config = SourceConfigBase(id="cam", frame_id=frame_id)
    source = ReplaySource(config, slots, reads)
    source.start()
    got = []
    while True:
        frames = slots.take(1, timeout=2.0)
        if not frames:
            if slots.finished:
                break
            continue
        got.extend(frames)
    source.stop()
    return got


def test_plain_images_get_the_sources_frame_id_and_sequence():
    image = np.zeros((4, 4, 3), np.uint8)
    frames = _frames([image, image], frame_id="camera_optical")
    assert [f.seq for f in frames] == [0, 1]
    assert {f.frame_id for f in frames} == {"camera_optical"}
    assert all(abs(f.wall - time.time()) < 5 for f in frames)


def test_frame_id_defaults_to_the_source_id():
    frames = _frames([np.zeros((4, 4, 3), np.uint8)])
    assert frames[0].frame_id == "cam"


def test_a_captured_header_is_kept_and_ages_count_from_its_stamp():
    sent = time.time() - 0.5  # captured half a second ago by the sender's (same) clock
    frames = _frames([Captured(np.zeros((4, 4, 3), np.uint8), wall=sent, seq=41, frame_id="left")])
    frame = frames[0]
    assert (frame.seq, frame.wall, frame.frame_id) == (41, sent, "left")
    age_s = time.monotonic() - frame.mono
    assert 0.5 <= age_s < 2.0


def test_a_stamp_from_a_clock_that_disagrees_is_kept_but_ages_count_from_arrival():
    sent = time.time() - 3600  # the sender's clock is an hour behind
    frame = _frames([Captured(np.zeros((4, 4, 3), np.uint8), wall=sent)])[0]
    assert frame.wall == sent and frame.seq == 0
    assert time.monotonic() - frame.mono < 2.0
