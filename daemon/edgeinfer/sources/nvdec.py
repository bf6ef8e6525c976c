"""Hardware video decode on NVIDIA GPUs (NVDEC) through PyNvVideoCodec: frames are decoded into GPU memory and
stay there (`edgeinfer.frame.DeviceImage`, NV12) for the GPU input stage to read.

PyNvVideoCodec (NVIDIA's own Python binding of the Video Codec SDK, MIT, one wheel per Python with FFmpeg's
demuxer inside) was chosen over PyAV's `h264_cuvid` (needs an FFmpeg built with NVDEC, which PyAV's wheels are
not) and over torchaudio/torchcodec's decoders (a torch dependency the daemon does not otherwise need). It is
imported here only, when a source decodes with NVDEC.

Files are demuxed by PyNvVideoCodec's own FFmpeg. Network streams (`rtsp`) are demuxed by PyAV instead
(`AnnexBPackets`): PyNvVideoCodec opens a URL without options, so neither the RTSP transport nor a read timeout
could be set, and a frozen camera would block its demuxer for good; PyAV passes FFmpeg's options and bounds every
read. Its packets go to the same NVDEC decoder (measured on the lent H200: the 250 frames of a 1080p clip demuxed
by PyAV decode to the same frames as PyNvVideoCodec's own demuxer gives).

The decoder runs on the frame pool's stream; each decoded surface is copied (device to device, ~1 us for 1080p)
into a pool buffer on that same stream, so ordering needs no host synchronization and the frame outlives the
decoder's own buffer, which is reused at the next decode call.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..cuda import runtime as cu
from ..cuda.frames import DeviceFramePool
from ..frame import DeviceImage
from ..lazy import lazy_import
from .base import SourceError

log = logging.getLogger(__name__)

# Codecs NVDEC decodes on every GPU from Turing on (the SDK's support matrix); others fall back to the CPU
NVDEC_CODECS = ("H264", "HEVC", "AV1", "VP9", "VP8", "MPEG2", "MPEG4", "MPEG1", "VC1", "JPEG")


class NvdecUnavailable(RuntimeError):
    """NVDEC cannot decode here: the message says why (package, GPU, driver, codec)."""


class StreamLost(RuntimeError):
    """The demuxer failed (network error, read timeout): the stream is gone, not one frame."""


def _module():
    try:
        import PyNvVideoCodec as nvc
    except Exception as exc:  # ImportError, or its loader's RuntimeError about the driver
        raise NvdecUnavailable(f"PyNvVideoCodec cannot be imported ({type(exc).__name__}: {exc}); "
                               "pip install 'edgeinfer[nvdec]' on a box with an NVIDIA GPU and driver") from exc
    return nvc


def probe() -> tuple[bool, str]:
    """(available, detail) for `edgeinfer doctor` and `decode: auto`."""
    try:
        nvc = _module()
        count = cu.device_count()
    except NvdecUnavailable as exc:
        return False, str(exc)
    except Exception as exc:  # cuda-python missing
        return False, f"cuda-python unavailable: {exc}"
    if count == 0:
        return False, "no CUDA GPU"
    return True, f"PyNvVideoCodec {getattr(nvc, '__version__', '?')}, {count} GPU(s)"


class HardwareDecoding:
    """The `decode: auto|cpu|nvdec` choice of a source NVDEC can decode (`video`, `rtsp`), a mixin listed before
    `Source`: resolved at the first open and kept; how the source opens its NvdecReader is its own. Uses the
    source's `config` (a `HardwareDecodeConfig`), `id` and `prefer_device_frames`."""

    def _init_decoding(self) -> None:
        self._nvdec: NvdecReader | None = None  # while decoding on the GPU
        self.decoder = "cpu" if self.config.decode == "cpu" else None  # resolved at the first open

    def _tries_nvdec(self) -> bool:
        """Whether this open tries NVDEC first: not for `cpu`, nor for `auto` when a model reading the source
        preprocesses on the CPU, nor once NVDEC was found unavailable under `auto`."""
        if self.decoder is None and self.config.decode == "auto" and not self.prefer_device_frames:
            log.info("source '%s': decoding on the CPU (decode: auto; a model reading it preprocesses on the CPU)",
                     self.id)
            self.decoder = "cpu"
        return self.decoder != "cpu"

    def _nvdec_unavailable(self, why: object) -> bool:
        """NVDEC cannot decode this source: an error naming the key under `decode: nvdec`; under `auto` the CPU
        decodes from now on (logged). Returns False (the open goes on on the CPU)."""
        if self.config.decode == "nvdec":
            raise SourceError(f"decode: nvdec: {why}")
        log.info("source '%s': decoding on the CPU (decode: auto; NVDEC unavailable: %s)", self.id, why)
        self.decoder = "cpu"
        return False

    def _nvdec_started(self, reader: NvdecReader) -> None:
        if self.decoder is None:
            log.info("source '%s': decoding %s with NVDEC on gpu %d into GPU memory (decode: %s)", self.id,
                     reader.codec, self.config.gpu, self.config.decode)
        self.decoder = "nvdec"

    def counters(self) -> dict:
        out = {"decode": self.decoder or self.config.decode}
        if self._nvdec is not None and self._nvdec.dropped:
            out["nvdec_pool_drops"] = self._nvdec.dropped
        return out


# PyAV's codec names -> NVDEC's (cudaVideoCodec members)
AV_CODECS = {"h264": "H264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9", "vp8": "VP8", "mpeg2video": "MPEG2",
             "mpeg4": "MPEG4", "mpeg1video": "MPEG1", "vc1": "VC1", "mjpeg": "JPEG"}
_ANNEX_B_START = (b"\0\0\0\1", b"\0\0\1")


class AnnexBPackets:
    """A stream (or file) demuxed by PyAV into the access units NVDEC's parser reads: Annex-B byte streams with the
    parameter sets in band. MP4's length-prefixed H.264/HEVC go through FFmpeg's mp4toannexb filter; an RTSP
    stream's parameter sets (the SDP's sprop-parameter-sets, which FFmpeg keeps as extradata) are sent before every
    key frame, so a decoder joining mid-stream or after a reconnect starts at the next key frame.

    `timeout_s` = (open, read): PyAV ends a blocked open or read after that long (a frozen camera) with an error."""

    def __init__(self, url: str, options: dict[str, str] | None = None,
                 timeout_s: tuple[float, float] | None = None):
        av = lazy_import("av", "pip install av (PyAV), needed to decode network streams with NVDEC")
        self.url = url
        self.container = av.open(url, options=options or {}, timeout=timeout_s)
        try:
            self.stream = self.container.streams.video[0]
        except IndexError:
            self.container.close()
            raise NvdecUnavailable(f"{url}: no video stream") from None
        context = self.stream.codec_context
        name = context.name
        self.codec = AV_CODECS.get(name, name.upper())
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        extradata = bytes(context.extradata or b"")
        self._filter = None
        self._prefix = b""
        if name in ("h264", "hevc") and extradata[:1] == b"\1":  # avcC / hvcC: MP4's length-prefixed form
            self._filter = av.bitstream.BitStreamFilterContext(f"{name}_mp4toannexb", self.stream)
        elif extradata.startswith(_ANNEX_B_START):
            self._prefix = extradata

    def __iter__(self) -> Iterator[tuple[bytes, int | None]]:
        """(Annex-B bytes, pts) in decode order: a whole picture from a file, one or more of a picture's slices
        from a stream (same pts)."""
        for packet in self.container.demux(self.stream):
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            for unit in (self._filter.filter(packet) if self._filter is not None else (packet,)):
                data = bytes(unit)
                if self._prefix and unit.is_keyframe:
                    data = self._prefix + data
                yield data, unit.pts

    def close(self) -> None:
        self.container.close()


class _FileDemuxer:
    """PyNvVideoCodec's own demuxer (files): its packets go to the decoder as they are."""

    def __init__(self, nvc: Any, path: str):
        try:
            self.demuxer = nvc.CreateDemuxer(filename=path)
        except Exception as exc:
            raise NvdecUnavailable(f"PyNvVideoCodec cannot open {path}: {exc}") from exc
        self.codec_id = self.demuxer.GetNvCodecId()
        self.codec = str(self.codec_id).rsplit(".", 1)[-1]
        self.fps = float(self.demuxer.FrameRate() or 0.0)

    def packets(self) -> Iterator[Any]:
        return iter(self.demuxer)

    def close(self) -> None:
        """Nothing to do: PyNvVideoCodec's demuxer has no close, and lets its file go when it is collected."""


class _StreamDemuxer:
    """PyAV's packets (`AnnexBPackets`) wrapped as PyNvVideoCodec packets; the last packet's bytes are kept until
    the next one, past the Decode call that reads them.

    Packets are not flagged as ending a picture: over RTSP one picture can arrive as several packets with the same
    timestamp (GStreamer's x264 key frames came as two, one per slice), so NVDEC's parser finds where a picture
    ends, at the start of the next one: up to one frame interval of latency, the price of decoding whole pictures.
    """

    def __init__(self, nvc: Any, packets: AnnexBPackets):
        self._nvc = nvc
        self.source = packets
        self.codec = packets.codec
        self.codec_id = getattr(nvc.cudaVideoCodec, packets.codec, None)
        self.fps = packets.fps
        self._held: np.ndarray | None = None

    def packets(self) -> Iterator[Any]:
        nvc = self._nvc
        for data, pts in self.source:
            self._held = np.frombuffer(data, np.uint8)
            packet = nvc.PacketData()
            packet.bsl_data, packet.bsl = self._held.ctypes.data, self._held.size
            if pts is not None:
                packet.pts = pts
            yield packet
        end = nvc.PacketData()  # an empty packet flushes the frames the decoder still holds
        end.bsl_data, end.bsl = 0, 0
        yield end

    def close(self) -> None:
        self.source.close()


class NvdecReader:
    """One file, or a stream demuxed by PyAV (`packets`), decoded by NVDEC into a `DeviceFramePool`."""

    def __init__(self, path: str | Path, gpu: int = 0, pool_buffers: int = 12, matrix: str = "bt601",
                 packets: AnnexBPackets | None = None):
        nvc = _module()
        cu.set_device(gpu)
        self.gpu = gpu
        self.matrix = matrix
        self.path = str(path)
        self._nvc = nvc
        live = packets is not None
        self.demuxer = _StreamDemuxer(nvc, packets) if live else _FileDemuxer(nvc, self.path)
        codec = self.demuxer.codec
        if codec.upper() not in NVDEC_CODECS or self.demuxer.codec_id is None:
            self._close_demuxer()
            raise NvdecUnavailable(f"{path}: codec {codec} is not decoded by NVDEC")
        self.codec = codec
        self.fps = self.demuxer.fps
        self.pool = DeviceFramePool(gpu, pool_buffers)
        try:
            context = cu.check(cu.driver().cuDevicePrimaryCtxRetain(gpu), "cuDevicePrimaryCtxRetain")
            self._context = context
            # a live stream is decoded with no display delay (a file keeps NVDEC's default of a few frames, which
            # B-frames need): LOW outputs each frame as its packet is decoded, in display order
            latency = {"latency": nvc.DisplayDecodeLatencyType.LOW} if live else {}
            self.decoder = nvc.CreateDecoder(gpuid=gpu, codec=self.demuxer.codec_id,
                                             cudacontext=int(context), cudastream=self.pool.stream.address,
                                             usedevicememory=True, **latency)
        except Exception as exc:
            self.pool.close()
            self._close_demuxer()
            raise NvdecUnavailable(f"NVDEC decoder for {codec} cannot be created: {exc}") from exc
        self._packets = self.demuxer.packets()
        self._pending: deque[Any] = deque()
        self.dropped = 0  # frames dropped because every pool buffer was held downstream

    def read(self) -> DeviceImage | None:
        """The next frame in display order, in GPU memory; None at the end of the stream. Raises on a packet the
        decoder rejects (the caller counts a bad frame), and on a stream that fails (PyAV's error)."""
        while True:
            while not self._pending:
                try:
                    packet = next(self._packets, None)
                except Exception as exc:  # PyAV's errors: connection reset, the read timeout
                    raise StreamLost(f"{type(exc).__name__}: {exc}") from exc
                if packet is None:
                    return None
                self._pending.extend(self.decoder.Decode(packet))
            decoded = self._pending.popleft()
            luma, chroma = (plane.__cuda_array_interface__ if hasattr(plane, "__cuda_array_interface__") else plane
                            for plane in decoded.cuda())
            height, width = int(luma["shape"][0]), int(luma["shape"][1])
            pitch = int(luma["strides"][0]) if luma.get("strides") else width
            image = self.pool.fill_nv12(int(luma["data"][0]), int(chroma["data"][0]), width, height, pitch,
                                        self.matrix)
            if image is not None:
                return image
            self.dropped += 1  # the pipeline holds every buffer: skip this frame rather than stall decoding

    def rewind(self) -> None:
        """Start the file again with the same decoder (a looping source): creating and destroying an NVDEC
        decoder holds the GIL for tens of milliseconds (py-spy: the largest GIL holder with 32 looping
        streams), a new demuxer costs little. The caller checks that the next read gives a frame."""
        self._pending.clear()
        self.demuxer = _FileDemuxer(self._nvc, self.path)
        self._packets = self.demuxer.packets()

    def _close_demuxer(self) -> None:
        self.demuxer.close()
        self.demuxer = None

    def close(self) -> None:
        self._pending.clear()
        self.decoder = None
        if self.demuxer is not None:
            self._close_demuxer()
        self.pool.close()
        if getattr(self, "_context", None) is not None:
            cu.driver().cuDevicePrimaryCtxRelease(self.gpu)
            self._context = None
