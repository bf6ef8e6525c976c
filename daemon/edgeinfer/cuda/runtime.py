"""CUDA runtime objects with explicit lifetimes (close(), context managers; never __del__).

Every call goes through `check`, which turns a CUDA error code into a `CudaError` naming the call and CUDA's
own error string, so a backend can re-raise it as a `BackendError` that says what failed.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..lazy import lazy_import

_INSTALL_HINT = "Install CUDA's Python bindings with: pip install '.[trt]' in the checkout (cuda-python)."
_modules: dict[str, Any] = {}


def _bindings(name: str):
    """`cuda.bindings.<name>`, imported on first use (the import is not free: done once per module)."""
    mod = _modules.get(name)
    if mod is None:
        mod = _modules[name] = lazy_import(f"cuda.bindings.{name}", _INSTALL_HINT)
    return mod


def cudart():
    """The CUDA runtime API (`cuda.bindings.runtime`)."""
    return _bindings("runtime")


def nvrtc():
    return _bindings("nvrtc")


def driver():
    return _bindings("driver")


class CudaError(RuntimeError):
    def __init__(self, call: str, code: Any, message: str):
        self.call = call
        self.code = code
        super().__init__(f"{call} failed: {message}")


def _error_string(err: Any) -> str:
    rt = cudart()
    try:
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
        return f"{name.decode()} ({text.decode()})"
    except Exception:  # a driver or NVRTC enum: its repr names it
        return str(err)


def check(result: Any, call: str) -> Any:
    """Unpack a cuda-python result tuple `(err, *values)`; raise CudaError unless err is success."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        raise CudaError(call, err, _error_string(err))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# -- devices ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]
    integrated: bool  # shares memory with the host (Jetson): mapped host memory avoids copies
    total_memory: int
    async_engine_count: int  # copy engines: >0 means copies overlap kernels

    @property
    def arch(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


def device_count() -> int:
    """CUDA devices visible to this process; 0 (not an error) when there is no driver or no GPU."""
    rt = cudart()
    err, count = rt.cudaGetDeviceCount()
    return int(count) if int(err) == 0 else 0


def device_info(index: int) -> DeviceInfo:
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(index), f"cudaGetDeviceProperties({index})")
    name = props.name
    name = name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)
    return DeviceInfo(index, name, (int(props.major), int(props.minor)), bool(props.integrated),
                      int(props.totalGlobalMem), int(props.asyncEngineCount))


def set_device(index: int) -> None:
    check(cudart().cudaSetDevice(index), f"cudaSetDevice({index})")


def mem_get_info() -> tuple[int, int]:
    """(free, total) bytes of the current device."""
    free, total = check(cudart().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)


# -- memory ----------------------------------------------------------------------------------------------
class HostBuffer:
    """Page-locked host memory (cudaHostAlloc), seen as a numpy array.

    `mapped=True` also maps it into the device's address space (zero copy on integrated GPUs): kernels and
    engines read `device_ptr` directly. The numpy view is valid until close(); whoever enqueues an async copy
    from it must keep this object alive until the stream has synchronized (FACTS: a freed host array under an
    async copy crashed).
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, mapped: bool = False):
        rt = cudart()
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.nbytes = max(1, int(np.prod(self.shape)) * self.dtype.itemsize)
        flags = rt.cudaHostAllocMapped if mapped else rt.cudaHostAllocDefault
        self.ptr = int(check(rt.cudaHostAlloc(self.nbytes, flags), f"cudaHostAlloc({self.nbytes} bytes)"))
        self.mapped = mapped
        self.device_ptr = (int(check(rt.cudaHostGetDevicePointer(self.ptr, 0), "cudaHostGetDevicePointer"))
                           if mapped else None)
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=np.uint8, count=int(np.prod(self.shape)) * self.dtype.itemsize
                                   ).view(self.dtype).reshape(self.shape)

    def close(self) -> None:
        if self.ptr:
            self.array = None
            check(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0

    def __enter__(self) -> HostBuffer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class DeviceBuffer:
    """Device memory (cudaMalloc)."""

    def __init__(self, nbytes: int):
        self.nbytes = max(1, int(nbytes))
        self.ptr = int(check(cudart().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes} bytes)"))

    def close(self) -> None:
        if self.ptr:
            check(cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0

    def __enter__(self) -> DeviceBuffer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def copy_async(dst: int, src: int, nbytes: int, kind: str, stream: Stream) -> None:
    rt = cudart()
    direction = {"h2d": rt.cudaMemcpyKind.cudaMemcpyHostToDevice, "d2h": rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                 "d2d": rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice}[kind]
    check(rt.cudaMemcpyAsync(dst, src, nbytes, direction, stream.handle), f"cudaMemcpyAsync({kind}, {nbytes} bytes)")


_gil_free: dict[str, Any] = {}


def _gil_free_driver_call(name: str) -> Any:
    """A libcuda function taking one handle, called through ctypes: unlike cuda-python's bindings, a ctypes call
    releases the GIL while it runs, so a thread blocked in it lets the others work. None where libcuda.so.1
    cannot be loaded (then callers fall back to polling)."""
    if name not in _gil_free:
        try:
            fn = getattr(ctypes.CDLL("libcuda.so.1"), name)
            fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _gil_free[name] = fn
    return _gil_free[name]


# -- streams, events, graphs ---------------------------------------------------------------------------------
class Stream:
    """A non-blocking stream: it never synchronizes with the legacy default stream."""

    def __init__(self):
        rt = cudart()
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self.driver_handle = driver().CUstream(int(self.handle))  # the same stream, typed for driver calls

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def wait(self, event: Event) -> None:
        check(cudart().cudaStreamWaitEvent(self.handle, event.handle, 0), "cudaStreamWaitEvent")

    @property
    def address(self) -> int:
        return int(self.handle)

    def close(self) -> None:
        if self.handle is not None:
            check(cudart().cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


class Event:
    """A CUDA event. `blocking=True`: a host thread waiting on it sleeps until the GPU signals it (no CPU spent
    waiting, some microseconds later to wake); False: the waiting thread spins on a core."""

    def __init__(self, timing: bool = True, blocking: bool = False):
        rt = cudart()
        flags = rt.cudaEventDefault if timing else rt.cudaEventDisableTiming
        if blocking:
            flags |= rt.cudaEventBlockingSync
        self.handle = check(rt.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")

    def record(self, stream: Stream) -> None:
        check(cudart().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def synchronize(self) -> None:
        check(cudart().cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def wait(self) -> None:
        """Wait for the work before the record to finish, letting other Python threads run meanwhile.

        cuda-python's cudaEventSynchronize holds the GIL while it waits (py-spy on the lent H200 caught the
        publish thread holding it there, stalling the sources and the prepare thread for the GPU's time), so this
        calls the driver's cuEventSynchronize through ctypes, which releases the GIL around the call. How the
        thread waits (sleeps until the GPU's interrupt, or spins) is the event's `blocking` flag. Where libcuda
        cannot be loaded by name it polls the event instead."""
        sync = _gil_free_driver_call("cuEventSynchronize")
        if sync is None:
            self._poll()
            return
        err = sync(int(self.handle))
        if err != 0:
            raise CudaError("cuEventSynchronize", err, _error_string(driver().CUresult(err)))

    def _poll(self, poll_s: float = 0.0002, yield_s: float = 0.0001) -> None:
        # yields the GIL between polls for the first `yield_s` (short work ends without a sleep's latency), then
        # sleeps `poll_s` between polls
        start = time.perf_counter()
        while not self.query():
            time.sleep(0.0 if time.perf_counter() - start < yield_s else poll_s)

    def query(self) -> bool:
        """True when the work before the record has finished."""
        rt = cudart()
        (err,) = rt.cudaEventQuery(self.handle)
        if int(err) == 0:
            return True
        if err == rt.cudaError_t.cudaErrorNotReady:
            return False
        raise CudaError("cudaEventQuery", err, _error_string(err))

    def elapsed_ms(self, since: Event) -> float:
        """Milliseconds from `since` to this event (both recorded and finished)."""
        return float(check(cudart().cudaEventElapsedTime(since.handle, self.handle), "cudaEventElapsedTime"))

    def close(self) -> None:
        if self.handle is not None:
            check(cudart().cudaEventDestroy(self.handle), "cudaEventDestroy")
            self.handle = None


class Graph:
    """A CUDA graph captured from the work a callable enqueues on a stream, replayed with one launch."""

    def __init__(self, graph: Any, exec_graph: Any):
        self._graph = graph
        self._exec = exec_graph

    @classmethod
    def capture(cls, stream: Stream, enqueue) -> Graph:
        """Capture what `enqueue()` puts on `stream`. A failed capture is always ended (FACTS: a stream left
        capturing makes every later call fail), and the CudaError says which step failed."""
        rt = cudart()
        check(rt.cudaStreamBeginCapture(stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")
        graph = None
        try:
            enqueue()
        except BaseException:
            err, graph = rt.cudaStreamEndCapture(stream.handle)
            if graph is not None and int(err) == 0:
                rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()  # clear the sticky-free error the failed capture left
            raise
        graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        try:
            exec_graph = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except CudaError:
            rt.cudaGraphDestroy(graph)
            raise
        return cls(graph, exec_graph)

    def launch(self, stream: Stream) -> None:
        check(cudart().cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")

    def close(self) -> None:
        rt = cudart()
        if self._exec is not None:
            rt.cudaGraphExecDestroy(self._exec)
            self._exec = None
        if self._graph is not None:
            rt.cudaGraphDestroy(self._graph)
            self._graph = None
