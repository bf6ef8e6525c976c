"""Device-resident frames: a pool of GPU buffers a source decodes into, and the on-demand download.

A `DeviceFramePool` belongs to one source. `fill_nv12` copies a decoder's NV12 surface into a free buffer on
the pool's stream (ordered after the decoder's own work when the decoder runs on that stream), records the
buffer's event and returns a `DeviceImage` holding a lease on the buffer. The buffer comes back to the pool when
the last reference to that image goes (see `edgeinfer.frame.DeviceImage` for the whole ownership rule). The
pool grows to `max_buffers`; when all are out (the pipeline holds them: queued, in flight, or kept by an
output), `fill_nv12` waits up to `timeout_s` for one and then returns None: the caller counts a dropped frame.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import numpy as np

from ..frame import DeviceImage
from . import runtime as cu

log = logging.getLogger(__name__)


class _Slot:
    __slots__ = ("buffer", "event")

    def __init__(self, nbytes: int):
        self.buffer = cu.DeviceBuffer(nbytes)
        self.event = cu.Event(timing=False)

    def close(self) -> None:
        self.event.close()
        self.buffer.close()


class DeviceFramePool:
    def __init__(self, device: int, max_buffers: int = 12):
        self.device = device
        self.max_buffers = max_buffers
        self.stream = cu.Stream()
        self._cond = threading.Condition()
        self._free: list[_Slot] = []
        self._count = 0
        self._nbytes = 0
        self._closed = False
        self.waits = 0  # times a fill found every buffer out

    @property
    def outstanding(self) -> int:
        with self._cond:
            return self._count - len(self._free)

    def _acquire(self, nbytes: int, timeout_s: float) -> _Slot | None:
        with self._cond:
            if nbytes > self._nbytes:  # a larger stream (rare): drop the free buffers of the old size
                for slot in self._free:
                    slot.close()
                self._count -= len(self._free)
                self._free.clear()
                self._nbytes = nbytes
            while True:
                while self._free:
                    slot = self._free.pop()
                    if slot.buffer.nbytes >= nbytes:
                        return slot
                    slot.close()
                    self._count -= 1
                if self._count < self.max_buffers:
                    self._count += 1
                    break
                self.waits += 1
                if not self._cond.wait(timeout_s) and not self._free:
                    return None
        try:
            return _Slot(nbytes)
        except Exception:
            with self._cond:
                self._count -= 1
            raise

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            if self._closed:
                self._count -= 1
                close = True
            else:
                self._free.append(slot)
                self._cond.notify()
                close = False
        if close:
            slot.close()

    def fill_nv12(self, y_ptr: int, uv_ptr: int, width: int, height: int, src_pitch: int, matrix: str = "bt601",
                  timeout_s: float = 1.0) -> DeviceImage | None:
        """Copy an NV12 frame (luma rows at y_ptr, chroma rows at uv_ptr, `src_pitch` bytes apart) into a pool
        buffer on the pool's stream; None when no buffer came free within timeout_s."""
        pitch = width
        luma = pitch * height
        slot = self._acquire(luma + pitch * (height // 2), timeout_s)
        if slot is None:
            return None
        dst = slot.buffer.ptr
        copy_2d(dst, pitch, y_ptr, src_pitch, width, height, self.stream)
        copy_2d(dst + luma, pitch, uv_ptr, src_pitch, width, height // 2, self.stream)
        slot.event.record(self.stream)
        image = DeviceImage(dst, width, height, pitch, "nv12", self.device, uv_ptr=dst + luma, matrix=matrix,
                            ready=slot.event, downloader=download_bgr)
        image.owner = weakref.finalize(image, self._release, slot)
        return image

    def close(self) -> None:
        """Free the buffers now free; those still referenced are freed when their last reference goes."""
        with self._cond:
            self._closed = True
            free, self._free = self._free, []
            self._count -= len(free)
            self._cond.notify_all()
        try:
            self.stream.synchronize()
        except cu.CudaError as exc:
            log.error("device frame pool: %s", exc)
        for slot in free:
            slot.close()
        self.stream.close()


def copy_2d(dst: int, dst_pitch: int, src: int, src_pitch: int, width_bytes: int, rows: int, stream: Any) -> None:
    rt = cu.cudart()
    cu.check(rt.cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width_bytes, rows,
                                  rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.handle), "cudaMemcpy2DAsync")


def download_bgr(image: DeviceImage) -> np.ndarray:
    """Host BGR copy of a device image, after its `ready` event. NV12 is converted with OpenCV's BT.601 routine
    whatever the image's matrix: this copy is for outputs that draw on it, not for the network."""
    import cv2

    rt = cu.cudart()
    if image.ready is not None:
        image.ready.synchronize()
    if image.format == "nv12":
        rows = image.height + image.height // 2
        host = np.empty((rows, image.width), np.uint8)
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cu.check(rt.cudaMemcpy2D(host.ctypes.data, image.width, image.ptr, image.pitch, image.width, image.height,
                                 kind), "cudaMemcpy2D(luma)")
        cu.check(rt.cudaMemcpy2D(host.ctypes.data + image.width * image.height, image.width, image.uv_ptr,
                                 image.pitch, image.width, image.height // 2, kind), "cudaMemcpy2D(chroma)")
        return cv2.cvtColor(host, cv2.COLOR_YUV2BGR_NV12)
    host = np.empty((image.height, image.width, 3), np.uint8)
    cu.check(rt.cudaMemcpy2D(host.ctypes.data, image.width * 3, image.ptr, image.pitch, image.width * 3,
                             image.height, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost), "cudaMemcpy2D")
    return host[..., ::-1].copy() if image.format == "rgb" else host
