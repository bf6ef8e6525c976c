"""A stand-in for TensorRT's runtime, for the GPU tests: TensorRT itself cannot be installed here.

It implements the part of TensorRT's runtime API that `edgeinfer.backends.tensorrt` uses (`TENSORRT_API`),
and nothing else, so the backend runs unchanged against it: the logger callback, `Runtime` with `DLA_core`,
`deserialize_cuda_engine` returning None and logging an error for bytes it cannot read, name-based tensor
I/O, optimization-profile shapes, `set_input_shape`, `set_tensor_address` and `execute_async_v3` on the
caller's stream. What it stands for is the engine call alone; everything around it (pinned memory, streams,
events, graphs, the preprocessing kernel, the decoder) is the product's real code on a real GPU.

An "engine" file is JSON naming what to run:
  {"standin": "onnx2torch", "onnx": PATH, "max_batch": 8}  the real network, converted by onnx2torch and run
      by torch on the given stream, reading and writing the device addresses it was given (no copies);
  {"standin": "scale", "shape": [3, 64, 64], "max_batch": 8}  a trivial NVRTC kernel (out = 2 * in): graph
      capture works on it, and it measures the runner's own overhead.
  {"standin": "memset", "input": [3, 416, 416], "outputs": {"detections": [2535, 85]}, "max_batch": 8}
      outputs of a detector's shape, zeroed on the stream (one cudaMemsetAsync each): an engine that costs
      nothing, to measure the daemon's own ceiling around it;
  {"standin": "scale", ..., "sync_in_enqueue": true}  synchronizes inside enqueue, which makes graph capture
      fail the way a real engine with an unsupported layer does (tests the eager fallback).
  {"standin": "busy", "a_ms": A, "c_ms": C, "input": [3, 416, 416], "outputs": {"detections": [2535, 85]},
      "max_batch": 8}  an engine whose cost is GPU time, as a real TensorRT engine's is: per enqueue one kernel
      that keeps the GPU busy for A + C * batch ms (a, c fitted to the real network's measured GPU time) and
      one memset per output (zeros: no detections). Its enqueue costs the CPU a few microseconds, like
      `execute_async_v3`, where the onnx2torch stand-in holds the GIL for most of the network's time: throughput
      measured with it is the daemon's, not the stand-in's.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import numpy as np

__version__ = "0.0-standin"


class TensorIOMode(Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(Enum):
    FLOAT = np.float32
    HALF = np.float16
    UINT8 = np.uint8
    INT32 = np.int32


def nptype(dtype: DataType):
    return dtype.value


class ILogger:
    class Severity(Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self):
        pass

    def log(self, severity, msg):  # overridden by the user's logger
        pass


class Runtime:
    num_DLA_cores = 0
    DLA_core = -1

    def __init__(self, logger: ILogger):
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes):
        try:
            spec = json.loads(bytes(data).decode())
            kind = spec["standin"]
        except (ValueError, KeyError, TypeError):
            self.logger.log(ILogger.Severity.ERROR, "stand-in: Serialization assertion failed: magic tag does not "
                                                    "match (not an engine file)")
            return None
        if kind == "onnx2torch":
            return _TorchEngine(spec)
        if kind == "scale":
            return _ScaleEngine(spec)
        if kind == "memset":
            return _MemsetEngine(spec)
        if kind == "busy":
            return _BusyEngine(spec)
        self.logger.log(ILogger.Severity.ERROR, f"stand-in: unknown engine kind {kind!r}")
        return None


class _EngineBase:
    """Tensors: name -> (mode, shape with -1 for the batch, DataType)."""

    tensors: dict
    max_batch: int

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, index: int) -> str:
        return list(self.tensors)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self.tensors[name][0]

    def get_tensor_shape(self, name: str) -> tuple:
        return self.tensors[name][1]

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.tensors[name][2]

    def get_tensor_profile_shape(self, name: str, profile: int):
        shape = self.tensors[name][1]
        return [(1, *shape[1:]), (1, *shape[1:]), (self.max_batch, *shape[1:])]

    def create_execution_context(self):
        return _Context(self)


class _Context:
    def __init__(self, engine: _EngineBase):
        self.engine = engine
        self.shapes = {n: t[1] for n, t in engine.tensors.items()}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(int(d) for d in shape)
        if not 1 <= shape[0] <= self.engine.max_batch:
            return False
        self.shapes[name] = shape
        for out, (mode, oshape, _dt) in self.engine.tensors.items():
            if mode is TensorIOMode.OUTPUT:
                self.shapes[out] = (shape[0], *oshape[1:])
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        return self.shapes[name]

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        return self.engine.execute(self, int(stream_handle))


class _CudaArray:
    """A device pointer seen by torch without a copy (__cuda_array_interface__)."""

    def __init__(self, ptr: int, shape: tuple, dtype):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": np.dtype(dtype).str,
                                         "data": (ptr, False), "version": 3, "stream": None}


class _TorchEngine(_EngineBase):
    def __init__(self, spec: dict):
        import onnx
        import onnx2torch
        import torch

        torch.backends.cudnn.allow_tf32 = False  # closer to the CPU reference, as an fp32 engine would be
        torch.backends.cuda.matmul.allow_tf32 = False
        self.torch = torch
        path = Path(spec["onnx"])
        model = onnx.load(str(path))
        self.max_batch = int(spec.get("max_batch", 8))
        self.tensors = {}
        for io, mode in ((model.graph.input, TensorIOMode.INPUT), (model.graph.output, TensorIOMode.OUTPUT)):
            for value in io:
                dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in value.type.tensor_type.shape.dim)
                self.tensors[value.name] = (mode, dims, DataType.FLOAT)
        net = onnx2torch.convert(model).cuda().eval()
        if spec.get("jit", True):
            # TorchScript runs the network in C++ without holding the GIL, as TensorRT's enqueue does; the
            # converted module in eager mode would spend ~2 ms of Python per frame that a real engine does not
            inp = [v for v in model.graph.input][0]
            dims = [d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
            try:
                with torch.no_grad():
                    net = torch.jit.trace(net, torch.zeros(*dims, device="cuda"), check_trace=False)
            except Exception as exc:  # keep the eager module: slower on the CPU, same answers
                print(f"stand-in: torch.jit.trace failed ({exc}); running the eager module")
        self.net = net
        # Replay the network as a CUDA graph of its own where torch can capture it: then an enqueue costs the
        # CPU a few launches, as a real engine's does, instead of ~1 ms of dispatching one kernel at a time.
        self.graphs: dict[tuple, tuple] = {}
        self.use_graph = bool(spec.get("graph", True))

    def _graph_for(self, shape: tuple):
        torch = self.torch
        entry = self.graphs.get(shape)
        if entry is None and self.use_graph:
            try:
                static_in = torch.zeros(shape, device="cuda")
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side), torch.no_grad():
                    for _ in range(3):  # warm-up outside the capture, as torch requires
                        self.net(static_in)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph), torch.no_grad():
                    static_out = self.net(static_in)
                outs = static_out if isinstance(static_out, (tuple, list)) else (static_out,)
                entry = self.graphs[shape] = (graph, static_in, outs)
                print(f"stand-in: the network replays as a CUDA graph for input {shape}")
            except Exception as exc:
                self.use_graph = False
                print(f"stand-in: the network cannot be captured ({type(exc).__name__}); eager execution")
                torch.cuda.synchronize()
        return entry

    def execute(self, ctx: _Context, stream: int) -> bool:
        torch = self.torch
        names = list(self.tensors)
        inp = [n for n in names if self.tensors[n][0] is TensorIOMode.INPUT][0]
        outs = [n for n in names if self.tensors[n][0] is TensorIOMode.OUTPUT]
        graph = self._graph_for(tuple(ctx.shapes[inp]))
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)), torch.no_grad():
            x = torch.as_tensor(_CudaArray(ctx.addresses[inp], ctx.shapes[inp], np.float32), device="cuda")
            if graph is not None:
                cuda_graph, static_in, static_outs = graph
                static_in.copy_(x)
                cuda_graph.replay()
                ys = static_outs
            else:
                y = self.net(x)
                ys = y if isinstance(y, (tuple, list)) else (y,)
            for name, value in zip(outs, ys):
                target = torch.as_tensor(_CudaArray(ctx.addresses[name], ctx.shapes[name], np.float32), device="cuda")
                target.copy_(value)
        return True


_SCALE_SRC = r"""
extern "C" __global__ void standin_scale(const float* x, float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2.0f * x[i];
}
"""


class _ScaleEngine(_EngineBase):
    def __init__(self, spec: dict):
        from cuda.bindings import driver, nvrtc, runtime

        self.rt, self.drv = runtime, driver
        shape = tuple(spec.get("shape", (3, 64, 64)))
        self.max_batch = int(spec.get("max_batch", 8))
        self.sync_in_enqueue = bool(spec.get("sync_in_enqueue", False))
        self.tensors = {"images": (TensorIOMode.INPUT, (-1, *shape), DataType.FLOAT),
                        "scaled": (TensorIOMode.OUTPUT, (-1, *shape), DataType.FLOAT)}
        err, dev = runtime.cudaGetDevice()
        err, props = runtime.cudaGetDeviceProperties(dev)
        arch = f"--gpu-architecture=sm_{props.major}{props.minor}".encode()
        err, prog = nvrtc.nvrtcCreateProgram(_SCALE_SRC.encode(), b"scale.cu", 0, [], [])
        (err,) = nvrtc.nvrtcCompileProgram(prog, 1, [arch])
        assert int(err) == 0, "stand-in kernel failed to compile"
        err, size = nvrtc.nvrtcGetCUBINSize(prog)
        cubin = b" " * size
        nvrtc.nvrtcGetCUBIN(prog, cubin)
        self._cubin = cubin
        err, self.module = driver.cuModuleLoadData(cubin)
        err, self.function = driver.cuModuleGetFunction(self.module, b"standin_scale")
        self._args = {}

    def execute(self, ctx: _Context, stream: int) -> bool:
        shape = ctx.shapes["images"]
        n = int(np.prod(shape))
        key = (ctx.addresses["images"], ctx.addresses["scaled"], n)
        args = self._args.get(key)
        if args is None:
            values = [np.array([key[0]], np.uint64), np.array([key[1]], np.uint64), np.array([n], np.int64)]
            args = self._args[key] = (np.array([v.ctypes.data for v in values], np.uint64), values)
        (err,) = self.drv.cuLaunchKernel(self.function, (n + 255) // 256, 1, 1, 256, 1, 1, 0,
                                         self.drv.CUstream(stream), args[0].ctypes.data, 0)
        if int(err) != 0:
            return False
        if self.sync_in_enqueue:  # illegal while capturing: this is what makes the capture fail
            (err,) = self.rt.cudaStreamSynchronize(self.rt.cudaStream_t(stream))
            if int(err) != 0:
                raise RuntimeError(f"cudaStreamSynchronize in enqueue: {err}")
        return True


class _MemsetEngine(_EngineBase):
    def __init__(self, spec: dict):
        from cuda.bindings import runtime

        self.rt = runtime
        self.max_batch = int(spec.get("max_batch", 8))
        self.tensors = {"images": (TensorIOMode.INPUT, (-1, *spec.get("input", (3, 416, 416))), DataType.FLOAT)}
        for name, shape in spec.get("outputs", {"detections": [2535, 85]}).items():
            self.tensors[name] = (TensorIOMode.OUTPUT, (-1, *shape), DataType.FLOAT)
        # {"fail_calls": [a, b]}: enqueues a..b-1 (counted from 0) fail, as an engine does on a bad input
        self.fail_calls = range(*spec.get("fail_calls", (0, 0)))
        self.calls = 0

    def execute(self, ctx: _Context, stream: int) -> bool:
        call, self.calls = self.calls, self.calls + 1
        if call in self.fail_calls:
            return False
        for name, (mode, _shape, _dt) in self.tensors.items():
            if mode is TensorIOMode.OUTPUT:
                nbytes = int(np.prod(ctx.shapes[name])) * 4
                (err,) = self.rt.cudaMemsetAsync(ctx.addresses[name], 0, nbytes, self.rt.cudaStream_t(stream))
                if int(err) != 0:
                    return False
        return True


_BUSY_SRC = r"""
// Spins until `ns` nanoseconds of the GPU's global timer have passed since the kernel started: the GPU is busy
// (this stream's work cannot go on) for that long, whatever the CPU does meanwhile.
extern "C" __global__ void standin_busy(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < ns);
}
"""


def _compile(source: str, name: bytes):
    from cuda.bindings import driver, nvrtc, runtime

    err, dev = runtime.cudaGetDevice()
    err, props = runtime.cudaGetDeviceProperties(dev)
    arch = f"--gpu-architecture=sm_{props.major}{props.minor}".encode()
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name + b".cu", 0, [], [])
    (err,) = nvrtc.nvrtcCompileProgram(prog, 1, [arch])
    if int(err) != 0:
        raise RuntimeError(f"stand-in kernel {name!r} failed to compile")
    err, size = nvrtc.nvrtcGetCUBINSize(prog)
    cubin = b" " * size
    nvrtc.nvrtcGetCUBIN(prog, cubin)
    err, module = driver.cuModuleLoadData(cubin)
    err, function = driver.cuModuleGetFunction(module, name)
    return cubin, module, function


class BusyKernel:
    """The stand-in's spinning kernel: `launch(stream, ns)` keeps `stream` busy for `ns` nanoseconds of GPU time.
    The busy engine enqueues it per inference; on its own it measures how a host thread waits on the GPU."""

    def __init__(self):
        from cuda.bindings import driver

        self._driver = driver
        self._cubin, self._module, self.function = _compile(_BUSY_SRC, b"standin_busy")
        self._args: dict[int, tuple] = {}

    def enqueue(self, stream: object, ns: int) -> bool:
        """Launch on a driver `CUstream`; False when the launch fails. The argument block stays alive with this
        object: a CUDA graph captured over the launch reads it at every replay."""
        args = self._args.get(ns)
        if args is None:
            value = np.array([ns], np.uint64)
            args = self._args[ns] = (np.array([value.ctypes.data], np.uint64), value)
        (err,) = self._driver.cuLaunchKernel(self.function, 1, 1, 1, 32, 1, 1, 0, stream, args[0].ctypes.data, 0)
        return int(err) == 0

    def launch(self, stream, ns: int) -> None:
        """`stream`: an `edgeinfer.cuda.runtime.Stream`."""
        if not self.enqueue(stream.driver_handle, ns):
            raise RuntimeError("cuLaunchKernel failed")


def python_thread_progress(work) -> tuple[float, int]:
    """Run `work()` here while a pure-Python thread counts loops: (seconds work took, loops the other thread
    made meanwhile). A wait that holds the GIL leaves the other thread (almost) no loops."""
    import threading
    import time

    count, stop, started = [0], threading.Event(), threading.Event()

    def spin() -> None:
        started.set()
        while not stop.is_set():
            count[0] += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    started.wait()
    time.sleep(0.02)
    try:
        before, t0 = count[0], time.perf_counter()
        work()
        return time.perf_counter() - t0, count[0] - before
    finally:
        stop.set()
        thread.join()


class _BusyEngine(_MemsetEngine):
    """GPU time t(b) = a + c * b per enqueue (one spinning kernel), outputs zeroed: see the module docstring."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        from cuda.bindings import driver

        self.drv = driver
        self.a_ns = float(spec["a_ms"]) * 1e6
        self.c_ns = float(spec["c_ms"]) * 1e6
        self.kernel = BusyKernel()

    def execute(self, ctx: _Context, stream: int) -> bool:
        if not super().execute(ctx, stream):
            return False
        batch = int(ctx.shapes["images"][0])
        return self.kernel.enqueue(self.drv.CUstream(stream), int(self.a_ns + self.c_ns * batch))


def write_engine(path: Path, **spec) -> Path:
    """Write a stand-in engine file (JSON) and return its path."""
    path.write_text(json.dumps(spec))
    return path


def _busy_us(prof) -> float:
    """Microseconds the GPU ran work (kernels, copies, memsets) in a torch profile: the union of their intervals."""
    from torch.autograd import DeviceType

    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if getattr(e, "device_type", None) == DeviceType.CUDA)
    total, current = 0.0, None
    for start, end in spans:
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = [start, end]
        else:
            current[1] = max(current[1], end)
    if current is not None:
        total += current[1] - current[0]
    return total


def measure_gpu_time(onnx: Path, batches=(1, 4, 8), reps: int = 30) -> dict:
    """The real network's GPU time per enqueue at each batch size, run by the onnx2torch stand-in: the sum of
    its kernels' durations (torch's profiler), which is what the GPU is busy for, beside the CUDA events' span
    (which also counts the gaps while the CPU dispatches). Returns {"batches": {b: {...}}, "a_ms", "c_ms"}: the
    least-squares line t(b) = a + c * b through the kernel sums, for the "busy" stand-in."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    engine = _TorchEngine({"onnx": str(onnx), "max_batch": max(batches)})
    ctx = engine.create_execution_context()
    names = list(engine.tensors)
    stream = torch.cuda.Stream()
    found = {}
    for b in batches:
        x = torch.zeros(b, *engine.tensors[names[0]][1][1:], device="cuda")
        ys = [torch.zeros(b, *engine.tensors[n][1][1:], device="cuda") for n in names[1:]]
        ctx.set_input_shape(names[0], tuple(x.shape))
        ctx.set_tensor_address(names[0], x.data_ptr())
        for n, y in zip(names[1:], ys):
            ctx.set_tensor_address(n, y.data_ptr())
        for _ in range(5):
            ctx.execute_async_v3(stream.cuda_stream)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            start.record(stream)
            for _ in range(reps):
                ctx.execute_async_v3(stream.cuda_stream)
            end.record(stream)
            torch.cuda.synchronize()
        found[b] = {"kernels_ms": _busy_us(prof) / 1e3 / reps, "events_ms": start.elapsed_time(end) / reps}
    xs = np.array(batches, float)
    ts = np.array([found[b]["kernels_ms"] for b in batches])
    if not (ts > 0).all():  # no kernel times from the profiler: fall back on the events' span
        ts = np.array([found[b]["events_ms"] for b in batches])
    c, a = np.polyfit(xs, ts, 1)
    return {"batches": found, "a_ms": float(max(a, 0.0)), "c_ms": float(max(c, 0.0))}
