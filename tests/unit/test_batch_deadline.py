"""Cross-camera batching: the batching deadline (`batch_wait_ms`) in the frame slots, and device frames in the
frame contract (CPU side: a frame that lives on the GPU still has a size, and its host pixels on demand)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgeinfer.config import parse_config
from edgeinfer.frame import DeviceImage, Frame
from edgeinfer.mailbox import FrameSlots


def _frame(source: str, seq: int = 0) -> Frame:
    return Frame(source, seq, np.zeros((4, 4, 3), np.uint8), time.monotonic(), time.time())


def test_full_batch_is_taken_at_once():
    slots = FrameSlots(["a", "b", "c"])
    for s in "abc":
        slots.put(_frame(s), wait=False)
    t0 = time.monotonic()
    frames = slots.take(3, timeout=1.0, fill_wait=5.0)  # everything is there: the deadline does not apply
    assert sorted(f.source for f in frames) == ["a", "b", "c"]
    assert time.monotonic() - t0 < 2.5  # far below the 5 s deadline (a loaded box still passes)


def test_partial_batch_is_taken_at_the_deadline():
    slots = FrameSlots(["a", "b", "c"])
    slots.put(_frame("a"), wait=False)
    t0 = time.monotonic()
    frames = slots.take(3, timeout=5.0, fill_wait=0.2)
    waited = time.monotonic() - t0
    assert [f.source for f in frames] == ["a"]  # b and c never came: a goes alone once its deadline passed
    assert waited >= 0.19
    assert waited < 4.0  # not held until the take's own timeout


def test_frames_arriving_before_the_deadline_join_the_batch():
    slots = FrameSlots(["a", "b"])
    slots.put(_frame("a"), wait=False)
    late = threading.Timer(0.05, lambda: slots.put(_frame("b"), wait=False))
    late.start()
    frames = slots.take(2, timeout=5.0, fill_wait=3.0)
    late.join()
    assert sorted(f.source for f in frames) == ["a", "b"]


def test_no_wait_without_a_deadline_and_for_ended_sources():
    slots = FrameSlots(["a", "b"])
    slots.put(_frame("a"), wait=False)
    assert [f.source for f in slots.take(2, timeout=1.0)] == ["a"]  # fill_wait 0: what is there
    slots.end("b")
    slots.put(_frame("a", 1), wait=False)
    t0 = time.monotonic()
    assert [f.seq for f in slots.take(2, timeout=5.0, fill_wait=3.0)] == [1]  # b ended: nothing to wait for
    assert time.monotonic() - t0 < 2.5


def test_deadline_counts_from_the_oldest_frame_arrival():
    slots = FrameSlots(["a", "b"])
    slots.put(_frame("a"), wait=False)
    time.sleep(0.3)  # a already waited longer than the deadline (the worker was busy): no further wait
    t0 = time.monotonic()
    assert [f.source for f in slots.take(2, timeout=5.0, fill_wait=0.2)] == ["a"]
    assert time.monotonic() - t0 < 0.15 + 2.0  # generous for a loaded box; the point is no 0.2 s wait on top


def test_batch_wait_is_configured_per_model_and_checked():
    base = """
sources: [{id: cam, type: synthetic}]
models: [{id: m, path: m.onnx, sources: [cam], max_batch: 4%s}]
outputs: [{type: jsonl, path: out.jsonl}]
"""
    assert parse_config(base % "").models[0].batch_wait_ms == 4.0
    assert parse_config(base % ", batch_wait_ms: 0").models[0].batch_wait_ms == 0
    with pytest.raises(Exception, match="batch_wait_ms"):
        parse_config(base % ", batch_wait_ms: -1")


def test_device_frame_has_a_size_and_no_host_pixels_without_a_gpu_image():
    frame = Frame("cam", 0, None, time.monotonic(), time.time(),
                  device=DeviceImage(ptr=1 << 20, width=1920, height=1080, pitch=1920, format="nv12"))
    assert frame.size == (1920, 1080)
    bare = Frame("cam", 1, None, time.monotonic(), time.time())
    with pytest.raises(ValueError, match="no pixels"):
        bare.pixels()
