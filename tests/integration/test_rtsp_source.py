"""The RTSP source against GStreamer's RTSP server on loopback: frames, server crash, restart, hang."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from edgeinfer.health import NullReporter
from edgeinfer.mailbox import FrameSlots
from edgeinfer.sources import ReconnectConfig, create_source
from edgeinfer.sources.schema import RtspSourceConfig
from support.frames import Consumer, wait_until
from support.rtsp_server import RtspServerProcess, rtsp_server_unavailable

pytestmark = pytest.mark.rtsp


@pytest.fixture(scope="module")
def rtsp_available() -> None:
    reason = rtsp_server_unavailable()
    if reason is not None:
        pytest.skip(f"no GStreamer RTSP server: {reason} (apt packages: tests/integration/rtsp_server.py)")


@pytest.fixture
def rtsp_server(rtsp_available: None) -> Iterator[RtspServerProcess]:
    """A running test RTSP server on a free loopback port (`.url`, `.kill()`, `.start()`, `.freeze()`)."""
    server = RtspServerProcess().start()
    try:
        yield server
    finally:
        server.thaw()
        server.stop()


def test_frames_arrive_and_survive_a_server_crash_and_restart(rtsp_server, record_property, capsys) -> None:
    slots = FrameSlots(["cam"])
    collector = Consumer(slots, keep_pixels=False)
    config = RtspSourceConfig(id="cam", url=rtsp_server.url, open_timeout_ms=3000, read_timeout_ms=1000,
                              reconnect=ReconnectConfig(initial_s=0.2, max_s=1.0))
    source = create_source(config, slots, NullReporter())
    try:
        source.start()
        assert wait_until(lambda: len(collector.frames) >= 30, timeout=20), source.stats()
        first = collector.frames[0]
        assert first.source == "cam" and first.seq >= 0
        assert wait_until(lambda: source.stats()["fps"] > 20, timeout=5), source.stats()  # served at 30

        rtsp_server.kill()
        killed_at = time.monotonic()
        assert wait_until(lambda: source.stats()["state"] == "reconnecting", timeout=5), source.stats()
        noticed_s = time.monotonic() - killed_at
        frames_before = source.stats()["frames"]
        # Down for a while: reopening is refused and retried with backoff.
        assert wait_until(lambda: source.stats()["failed_opens"] >= 2, timeout=5), source.stats()
        assert source.stats()["frames"] == frames_before

        rtsp_server.start()
        restarted_at = time.monotonic()
        assert wait_until(lambda: collector.count_after(restarted_at) >= 10, timeout=20), source.stats()
        first_after = next(f for f in collector.frames if f.mono > restarted_at)
        reconnect_s = first_after.mono - restarted_at
        stats = source.stats()
        assert stats["state"] == "running"
        assert stats["reconnects"] >= 1
        assert stats["frames"] > frames_before
        assert first_after.seq >= frames_before  # numbering continued
        record_property("rtsp_loss_noticed_s", round(noticed_s, 3))
        record_property("rtsp_reconnect_s", round(reconnect_s, 3))
        with capsys.disabled():
            print(f"\n[rtsp] loss noticed after {noticed_s:.2f} s; first frame {reconnect_s:.2f} s after the "
                  f"server was back (reconnects={stats['reconnects']}, failed_opens={stats['failed_opens']})")
        assert reconnect_s < 10
    finally:
        started = time.monotonic()
        source.stop()
        stop_s = time.monotonic() - started
        collector.close()
    assert stop_s < 2.0
    assert source.stats()["state"] == "stopped"


def test_a_hung_server_is_noticed_by_the_read_timeout(rtsp_server, capsys) -> None:
    slots = FrameSlots(["cam"])
    collector = Consumer(slots, keep_pixels=False)
    config = RtspSourceConfig(id="cam", url=rtsp_server.url, open_timeout_ms=1500, read_timeout_ms=1000,
                              reconnect=ReconnectConfig(initial_s=0.2, max_s=0.5))
    source = create_source(config, slots, NullReporter())
    try:
        source.start()
        assert wait_until(lambda: len(collector.frames) >= 10, timeout=20), source.stats()
        rtsp_server.freeze()
        frozen_at = time.monotonic()
        # Without the read timeout, OpenCV would sit in read() for ~30 s here.
        assert wait_until(lambda: source.stats()["state"] == "reconnecting", timeout=5), source.stats()
        noticed_s = time.monotonic() - frozen_at
        assert noticed_s < 1.8  # one read timeout (1 s), not three
        # While it hangs, reopening times out (open_timeout_ms) and is retried; stop() stays bounded.
        assert wait_until(lambda: source.stats()["failed_opens"] >= 1, timeout=5), source.stats()
        rtsp_server.thaw()
        thawed_at = time.monotonic()
        assert wait_until(lambda: collector.count_after(thawed_at) >= 10, timeout=20), source.stats()
        with capsys.disabled():
            print(f"\n[rtsp] hung server noticed after {noticed_s:.2f} s")
    finally:
        started = time.monotonic()
        source.stop(timeout=2.0)
        stop_s = time.monotonic() - started
        collector.close()
    assert stop_s < 2.2
