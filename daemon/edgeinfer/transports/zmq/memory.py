"""Keep ZeroMQ's large receive buffers in the heap instead of mapping and unmapping one per frame.

ZeroMQ allocates every received message with malloc. A 640x480 bgr8 frame is 921,600 bytes, above glibc's
mmap threshold, and the per-thread arena of ZeroMQ's I/O thread gives such a block back to the kernel when it
is freed: so each frame costs an mmap (and the kernel zeroing 225 fresh pages) in the I/O thread and a munmap
(with its TLB shootdown) in whichever thread drops the last reference, here the capture thread. Measured on the
2-core VM: freeing one received 640x480 frame took 35 - 90 us; with the thresholds below, 0.9 us
(`strace -c`: 331 munmap and 606 mmap calls for 300 frames before, none after).

`M_MMAP_THRESHOLD` 32 MiB (glibc's ceiling for it; `max_bytes` is 16 MiB by default) keeps such blocks in the
arenas, and `M_TRIM_THRESHOLD` 64 MiB lets the arenas keep that much free memory for the next frames instead of
returning it at once. The cost: up to that much freed memory stays in the process. The setting is
process-wide, made once by the first `zmq` source that opens (`reuse_buffers: false` leaves malloc alone), and
only on glibc (musl and others: nothing is done). The same can be had without code from the environment
(`MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=67108864`, e.g. in the systemd unit's env file).
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024

_lock = threading.Lock()
_done: bool | None = None


def keep_large_buffers_in_heap() -> bool:
    """Set glibc's mmap and trim thresholds once per process; True when they are set (now or before)."""
    global _done
    with _lock:
        if _done is not None:
            return _done
        _done = False
        if platform.libc_ver()[0] != "glibc":
            log.debug("not glibc: malloc thresholds left as they are")
            return False
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        log.debug("malloc: mmap threshold %d, trim threshold %d (%s)", MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES,
                  "set" if _done else "refused")
        return _done
