"""Thin cuda-python helpers (cuda.bindings): pinned and device buffers, streams, events, graphs, NVRTC.

Nothing here imports CUDA at module import time: `edgeinfer.cuda.runtime.cudart()` imports it on first use and
says how to install it when it is missing, so `import edgeinfer` works on a box without CUDA.
"""

from .runtime import (
    CudaError,
    DeviceBuffer,
    DeviceInfo,
    Event,
    Graph,
    HostBuffer,
    Stream,
    check,
    cudart,
    device_count,
    device_info,
    set_device,
)

__all__ = [
    "CudaError",
    "DeviceBuffer",
    "DeviceInfo",
    "Event",
    "Graph",
    "HostBuffer",
    "Stream",
    "check",
    "cudart",
    "device_count",
    "device_info",
    "set_device",
]
