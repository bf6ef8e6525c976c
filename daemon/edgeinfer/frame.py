"""The unit of work that travels from a source to the outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEVICE_FORMATS = ("nv12", "bgr", "rgb")


@dataclass(eq=False)  # no slots: the pool's release callback needs a weak reference (Python 3.10 has no weakref_slot)
class DeviceImage:
    """A frame's pixels in GPU memory (a hardware decoder's output), read there by the GPU input stage so that
    they never cross the bus.

    Layout: `format` "bgr"/"rgb": `height` rows of `width` x 3 interleaved uint8 at `ptr`, `pitch` bytes apart;
    "nv12": `height` luma rows at `ptr` and `height / 2` rows of interleaved U,V at `uv_ptr`, both `pitch` bytes
    apart, limited range, converted with `matrix` (bt601 | bt709).

    Ownership, in order:
    - the producer (a source's `DeviceFramePool`) fills the buffer with work on its own stream and records
      `ready` (a CUDA event) after it; a reader must make its stream wait on `ready` before reading (None: the
      pixels are complete already);
    - whoever holds a reference to this object may read the pixels: the buffer belongs to `owner` and is not
      reused while any reference remains. The pipeline keeps the frame (and so this object) referenced until the
      batch that read it is published, which is after the GPU work reading it has completed (the set's done
      event): no stream can still read a buffer that is handed back;
    - release: when the last reference goes (CPython frees it at once: a frame overwritten in a mailbox, a
      published batch, a result dropped by an output), the owner's callback returns the buffer to its pool.
      Nothing is freed from that callback while the pool is open; `DeviceFramePool.close` frees the buffers
      explicitly, and any still referenced then are freed when their last reference goes.
    Outputs that need host pixels call `Frame.pixels()`, which downloads on demand (and keeps the copy).
    """

    ptr: int
    width: int
    height: int
    pitch: int
    format: str  # one of DEVICE_FORMATS
    device: int = 0  # CUDA device ordinal
    uv_ptr: int = 0  # nv12: the chroma plane
    matrix: str = "bt601"  # nv12: YUV -> RGB matrix, limited range
    ready: Any = None  # edgeinfer.cuda.runtime.Event to wait on before reading; None = ready
    owner: Any = None  # the pool's lease on the buffer (returned when this object goes)
    downloader: Any = None  # set by the producer: image -> host BGR array (edgeinfer.cuda.frames.download_bgr)

    def download(self) -> np.ndarray:
        """The pixels as H x W x 3 uint8 BGR in host memory (a synchronous copy; for outputs, not the hot path)."""
        if self.downloader is None:
            raise ValueError("this device image was made without a downloader: its pixels stay on the GPU")
        return self.downloader(self)


@dataclass(slots=True)
class Frame:
    """One captured image and its header: where and when it came from.

    `mono` (time.monotonic) is for budgets and ages; `wall` (time.time, or the sender's own capture stamp
    when the frame arrived with one, e.g. a ROS image or a ZeroMQ frame) is the capture stamp for messages.
    `frame_id` is the coordinate frame of the camera (ROS `header.frame_id`): the source's configured one,
    or the one the frame arrived with.

    Ownership of `image`: the source that captured it wrote it, and nobody writes it afterwards. One frame is
    handed to every model that reads its source and to the outputs that draw or forward it, all on their own
    threads, so the array is shared and must be treated as read-only; a raw frame that arrived over ZeroMQ is
    a view of the received message and is read-only in fact (`image.flags.writeable` is False). Whoever
    needs to change pixels (annotation, a preprocessing step) copies first. The array lives as long as the
    last holder keeps the frame: the mailbox drops its reference when a newer frame replaces it.

    A frame decoded into GPU memory has `image` None and `device` set (see `DeviceImage` for who owns that
    buffer and when it is released); `pixels()` downloads it once, on demand, for whoever needs host pixels.
    """

    source: str
    seq: int  # per source, from 0, in capture (file) order; or the sender's own sequence number
    image: np.ndarray | None  # H x W x 3, uint8, BGR (OpenCV order); None for a frame that lives on the GPU
    mono: float
    wall: float
    frame_id: str = ""
    stream: int = 0  # which opening of the source gave it (counts reconnects and passes over a file): trackers
    # start over when it changes
    device: DeviceImage | None = None  # the pixels in GPU memory (hardware decode); see DeviceImage

    def pixels(self) -> np.ndarray:
        """Host BGR pixels: `image`, or the device image downloaded once on demand (annotated outputs)."""
        if self.image is None:
            if self.device is None:
                raise ValueError(f"frame {self.seq} of '{self.source}' has no pixels")
            self.image = self.device.download()
        return self.image

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image, wherever it lives."""
        if self.image is not None:
            return self.image.shape[1], self.image.shape[0]
        if self.device is None:
            raise ValueError(f"frame {self.seq} of '{self.source}' has no pixels")
        return self.device.width, self.device.height


@dataclass(slots=True)
class Captured:
    """What a source's `_read` may return instead of a bare image: the image with the header it arrived
    with. Fields left None are filled by the source base (its own sequence number, the time of the read)."""

    image: np.ndarray
    wall: float | None = None  # the sender's capture stamp (wall-clock seconds)
    seq: int | None = None  # the sender's sequence number
    frame_id: str | None = None
