"""Hardware video decode on NVIDIA GPUs (NVDEC) through PyNvVideoCodec: frames are decoded into GPU memory and
stay there (`edgeinfer.frame.DeviceImage`, NV12) for the GPU input stage to read.

PyNvVideoCodec (NVIDIA's own Python binding of the Video Codec SDK, MIT, one wheel per Python with FFmpeg's
demuxer inside) was chosen over PyAV's `h264_cuvid` (needs an FFmpeg built with NVDEC, which PyAV's wheels are
not) and over torchaudio/torchcodec's decoders (a torch dependency the daemon does not otherwise need). It is
imported here only, when a source decodes with NVDEC.

The decoder runs on the frame pool's stream; each decoded surface is copied (device to device, ~1 us for 1080p)
into a pool buffer on that same stream, so ordering needs no host synchronization and the frame outlives the
decoder's own buffer, which is reused at the next decode call.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any

from ..cuda import runtime as cu
from ..cuda.frames import DeviceFramePool
from ..frame import DeviceImage

log = logging.getLogger(__name__)

# Codecs NVDEC decodes on every GPU from Turing on (the SDK's support matrix); others fall back to the CPU
NVDEC_CODECS = ("H264", "HEVC", "AV1", "VP9", "VP8", "MPEG2", "MPEG4", "MPEG1", "VC1", "JPEG")


class NvdecUnavailable(RuntimeError):
    """NVDEC cannot decode here: the message says why (package, GPU, driver, codec)."""


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


class NvdecReader:
    """One file (or URL FFmpeg's demuxer opens) decoded by NVDEC into a `DeviceFramePool`."""

    def __init__(self, path: str | Path, gpu: int = 0, pool_buffers: int = 12, matrix: str = "bt601"):
        nvc = _module()
        cu.set_device(gpu)
        self.gpu = gpu
        self.matrix = matrix
        try:
            self.demuxer = nvc.CreateDemuxer(filename=str(path))
        except Exception as exc:
            raise NvdecUnavailable(f"PyNvVideoCodec cannot open {path}: {exc}") from exc
        codec = str(self.demuxer.GetNvCodecId()).rsplit(".", 1)[-1]
        if codec.upper() not in NVDEC_CODECS:
            raise NvdecUnavailable(f"{path}: codec {codec} is not decoded by NVDEC")
        self.codec = codec
        self.path = str(path)
        self._nvc = nvc
        self.fps = float(self.demuxer.FrameRate() or 0.0)
        self.pool = DeviceFramePool(gpu, pool_buffers)
        try:
            context = cu.check(cu.driver().cuDevicePrimaryCtxRetain(gpu), "cuDevicePrimaryCtxRetain")
            self._context = context
            self.decoder = nvc.CreateDecoder(gpuid=gpu, codec=self.demuxer.GetNvCodecId(),
                                             cudacontext=int(context), cudastream=self.pool.stream.address,
                                             usedevicememory=True)
        except Exception as exc:
            self.pool.close()
            raise NvdecUnavailable(f"NVDEC decoder for {codec} cannot be created: {exc}") from exc
        self._packets = iter(self.demuxer)
        self._pending: deque[Any] = deque()
        self.dropped = 0  # frames dropped because every pool buffer was held downstream

    def read(self) -> DeviceImage | None:
        """The next frame in display order, in GPU memory; None at the end of the stream. Raises on a packet the
        decoder rejects (the caller counts a bad frame)."""
        while True:
            while not self._pending:
                packet = next(self._packets, None)
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
        self.demuxer = self._nvc.CreateDemuxer(filename=self.path)
        self._packets = iter(self.demuxer)

    def close(self) -> None:
        self._pending.clear()
        self.decoder = None
        self.demuxer = None
        self.pool.close()
        if getattr(self, "_context", None) is not None:
            cu.driver().cuDevicePrimaryCtxRelease(self.gpu)
            self._context = None
