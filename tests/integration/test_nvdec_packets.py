"""The CPU half of NVDEC for network streams: PyAV demuxes a file or an RTSP stream into the Annex-B access units
NVDEC's parser reads (`edgeinfer.sources.nvdec.AnnexBPackets`). The GPU half (those units into NVDEC, the same
frames as PyNvVideoCodec's own demuxer gives) is `tests/gpu/test_device_frames.py`; NVDEC itself cannot run on
CI's machines."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgeinfer.sources.nvdec import AnnexBPackets
from support.h264 import make_clip
from support.rtsp_server import RtspServerProcess, rtsp_server_unavailable

av = pytest.importorskip("av")


def nal_types(unit: bytes) -> list[int]:
    """H.264 NAL unit types in an Annex-B access unit, in order."""
    types, i = [], 0
    while True:
        i = unit.find(b"\0\0\1", i)
        if i < 0 or i + 3 >= len(unit):
            return types
        types.append(unit[i + 3] & 0x1F)
        i += 3


@pytest.fixture(scope="module")
def clip(tmp_path_factory, demo_video: Path) -> Path:
    return make_clip(demo_video, tmp_path_factory.mktemp("clip") / "clip.mp4", 320, 240, frames=60, gop=25)


def test_mp4_packets_become_annex_b_with_parameter_sets_at_key_frames(clip: Path) -> None:
    packets = AnnexBPackets(str(clip))
    try:
        assert packets.codec == "H264" and packets.fps == pytest.approx(25.0)
        units = list(packets)
    finally:
        packets.close()
    assert len(units) == 60  # one access unit per frame: none lost, none merged
    for data, _pts in units:
        assert data.startswith((b"\0\0\0\1", b"\0\0\1")), data[:8]  # MP4's length prefixes are gone
        assert 1 in nal_types(data) or 5 in nal_types(data)  # a coded slice in every unit
    keys = [i for i, (data, _) in enumerate(units) if 5 in nal_types(data)]
    assert keys[0] == 0 and all(b - a <= 25 for a, b in zip(keys, keys[1:])), keys  # the clip's GOP (or a cut)
    for i in keys:  # SPS and PPS before every IDR: a decoder can start at any key frame
        types = nal_types(units[i][0])
        assert types.index(7) < types.index(5) and 8 in types, types


def test_rtsp_packets_and_a_frozen_server_ends_the_read(tmp_path: Path) -> None:
    reason = rtsp_server_unavailable()
    if reason is not None:
        pytest.skip(f"no GStreamer RTSP server: {reason}")
    with RtspServerProcess(fps=30) as server:
        packets = AnnexBPackets(server.url, {"rtsp_transport": "tcp"}, timeout_s=(5.0, 1.0))
        try:
            assert packets.codec == "H264"
            units, it = [], iter(packets)
            for data, pts in it:
                units.append((data, pts))
                if len(units) >= 40:
                    break
            assert all(d.startswith((b"\0\0\0\1", b"\0\0\1")) for d, _ in units)
            key = next(d for d, _ in units if 5 in nal_types(d))  # the server's GOP is 15 frames
            assert 7 in nal_types(key) and 8 in nal_types(key)
            stamps = [p for _, p in units if p is not None]
            # in order; a picture may come in several packets (GStreamer sends a key frame's two slices apart)
            assert stamps == sorted(stamps) and len(set(stamps)) >= 0.8 * len(stamps), stamps
            server.freeze()
            frozen = time.monotonic()
            error = None
            try:
                for _ in it:
                    if time.monotonic() - frozen > 10:
                        break
            except Exception as exc:  # PyAV's error for the interrupted read: NvdecReader makes it StreamLost
                error = exc
            assert error is not None, "the read did not time out"
            assert time.monotonic() - frozen < 5.0  # the 1 s read timeout, not FFmpeg's default of none
        finally:
            server.thaw()
            packets.close()


def _nvdec_here() -> bool:
    from edgeinfer.sources import nvdec

    return nvdec.probe()[0]


@pytest.mark.parametrize("kind", ["video", "rtsp"])
def test_decode_nvdec_without_nvdec_says_which_key_and_why(kind: str, clip: Path) -> None:
    """On a box without PyNvVideoCodec or a GPU (CI), `decode: nvdec` fails naming the key and the reason; `auto`
    decodes on the CPU and says so in its counters."""
    if _nvdec_here():
        pytest.skip("NVDEC works here: the GPU tests cover it")
    from edgeinfer.health import NullReporter
    from edgeinfer.mailbox import FrameSlots
    from edgeinfer.sources import ReconnectConfig, create_source
    from edgeinfer.sources.base import SourceError
    from edgeinfer.sources.schema import RtspSourceConfig, VideoSourceConfig
    from support.frames import wait_until

    def make(decode: str):
        if kind == "video":
            return VideoSourceConfig(id="cam", path=clip, decode=decode)
        return RtspSourceConfig(id="cam", url="rtsp://127.0.0.1:9/none", decode=decode, open_timeout_ms=300,
                                reconnect=ReconnectConfig(initial_s=0.1, max_s=0.2))

    source = create_source(make("nvdec"), FrameSlots(["cam"]), NullReporter())
    try:
        try:
            source.start()  # a file fails at start; a stream keeps retrying and says why in its stats
        except SourceError as exc:
            error = str(exc)
        else:
            assert wait_until(lambda: source.stats()["last_error"], timeout=10), source.stats()
            error = source.stats()["last_error"]
        assert "decode: nvdec" in error and "PyNvVideoCodec" in error, error
    finally:
        source.stop(timeout=2.0)
    auto = create_source(make("auto"), FrameSlots(["cam"]), NullReporter())
    try:
        auto.start()
        assert wait_until(lambda: auto.counters()["decode"] == "cpu", timeout=10), auto.counters()
    finally:
        auto.stop(timeout=2.0)
