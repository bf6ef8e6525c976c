"""TensorRT backend: serialized engines on a GPU or a DLA core, fed through pinned memory and CUDA streams.

The frame path (per buffer set, `buffer_sets` of them so that work overlaps):

    prepare thread:  raw uint8 BGR frame -> pinned staging (one host memcpy; none more on Jetson: mapped)
    infer thread:    [copy stream]    H2D of the pixels -> event
                     [compute stream] wait event -> preprocessing kernel -> engine -> D2H of the outputs
                     (the compute part replayed as one CUDA graph after warm-up; eager launches where capture
                     fails, with one log line saying why)
    publish thread:  wait for the set's event -> decode from pinned outputs -> the set is free again

The upload of frame n+1 runs on the copy stream while frame n computes, and frame n-1 is decoded on the CPU
meanwhile. Only the name-based I/O API of TensorRT 10.3 (JetPack 6) and later is used: `TENSORRT_API` lists
every attribute touched, and a test checks them against the real `tensorrt_lean` module. The runtime module is
`tensorrt`, the lean runtime `tensorrt_lean` (version-compatible engines), `tensorrt_rtx` (RTX PCs), or any
module implementing the same runtime API (the GPU tests' stand-in engine).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import compat
from ..cuda import runtime as cu
from ..lazy import MissingDependency
from ..preprocess.cuda import GpuInputStage
from .base import Backend, BackendError, InferHandle, InputStage, TensorSpec
from .schema import RUNTIME_CHOICES, TensorRTOptions

log = logging.getLogger(__name__)

# TensorRT-RTX's PyPI wheel (tensorrt-rtx-cu13-bindings 1.7.1) installs the package `tensorrt_rtx_bindings`;
# other installs name it `tensorrt_rtx`
_RUNTIME_IMPORT = {"tensorrt_rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings")}

# Every TensorRT attribute this backend uses, by owner ("" = the module). All exist in TensorRT 10.3.
TENSORRT_API: dict[str, tuple[str, ...]] = {
    "": ("ILogger", "Runtime", "TensorIOMode", "nptype", "__version__"),
    "ILogger": ("Severity", "log"),
    "Runtime": ("deserialize_cuda_engine", "DLA_core", "num_DLA_cores"),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype",
                    "get_tensor_profile_shape", "num_optimization_profiles", "create_execution_context"),
    "IExecutionContext": ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"),
    "TensorIOMode": ("INPUT", "OUTPUT"),
}




def load_runtime_module(name: str):
    """The TensorRT runtime module for `runtime:`; MissingDependency says what to install."""
    names = RUNTIME_CHOICES if name == "auto" else (name,)
    for candidate in names:
        for module in _RUNTIME_IMPORT.get(candidate, (candidate,)):
            try:
                return importlib.import_module(module)
            except ImportError:
                continue
    raise MissingDependency(
        f"no TensorRT runtime module ({' or '.join(names)}) can be imported. On Jetson, TensorRT comes with "
        "JetPack (python3-libnvinfer; a venv needs --system-site-packages to see it); elsewhere: "
        "pip install '.[trt]' in the checkout (tensorrt-lean-cu13: version-compatible engines) or tensorrt."
    )


def _make_logger(trt: Any, messages: list[str], keep_from: int = logging.ERROR, keep: int = 20):
    """A TensorRT logger that keeps the messages at `keep_from` and above (the last `keep`, to name them in an
    error) and forwards everything to logging. Defined in a factory so this module imports without TensorRT."""
    severity = trt.ILogger.Severity
    levels = {severity.INTERNAL_ERROR: logging.ERROR, severity.ERROR: logging.ERROR,
              severity.WARNING: logging.WARNING, severity.INFO: logging.DEBUG, severity.VERBOSE: logging.DEBUG}

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, sev, msg):
            level = levels.get(sev, logging.INFO)
            if level >= keep_from:
                messages.append(str(msg))
                del messages[:-keep]
            log.log(level, "TensorRT: %s", msg)

    return _Logger()


def _default_cache_dir() -> Path:
    state = os.environ.get("STATE_DIRECTORY")  # systemd's StateDirectory=
    if state:
        return Path(state.split(":")[0]) / "kernels"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeinfer"


class _Set:
    """One buffer set's engine I/O: device input (written by the preprocessing kernel), outputs, events."""

    def __init__(self):
        self.input = None
        self.outputs_device: list[Any] = []
        self.outputs_host: list[Any] = []
        self.uploaded = None
        self.start = None
        self.done = None


class _GpuInference(InferHandle):
    __slots__ = ("backend", "set_index", "nb")

    def __init__(self, backend: TensorRTBackend, set_index: int, nb: int):
        self.backend = backend
        self.set_index = set_index
        self.nb = nb

    def wait(self) -> tuple[list[np.ndarray], float]:
        return self.backend._collect(self.set_index, self.nb)


class TensorRTBackend(Backend):
    type = "tensorrt"
    options_model = TensorRTOptions
    options: TensorRTOptions

    # -- activation ----------------------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        self._cu = cu
        self._messages: list[str] = []
        self._sets: list[_Set] = []
        self._graphs: dict[tuple, Any] = {}
        self._graph_generation: dict[int, int] = {}
        self._graphs_ok = self.options.cuda_graph == "auto"
        self._eager_seen: set[tuple] = set()
        self._bound = threading.local()
        self._host_feed: dict[int, tuple] = {}
        self.engine = self.context = self.runtime = None
        self._compute = self._copy = None
        device = self.device
        if device.processor == "cpu":
            raise BackendError(f"model '{self.model_id}': a TensorRT engine runs on a GPU or DLA, not device cpu")
        try:
            count = cu.device_count()
        except MissingDependency as exc:
            raise BackendError(f"model '{self.model_id}': {exc}") from exc
        if count == 0:
            raise BackendError(f"model '{self.model_id}': device {device if device.processor != 'auto' else 'gpu'}: "
                               "this box has no CUDA GPU (or no NVIDIA driver)")
        self.cuda_index = device.cuda_index
        if self.cuda_index >= count:
            raise BackendError(f"model '{self.model_id}': device {device}: this box has {count} CUDA GPU(s)")
        try:
            cu.set_device(self.cuda_index)
            self.device_info = cu.device_info(self.cuda_index)
        except cu.CudaError as exc:
            raise BackendError(f"model '{self.model_id}': {exc}") from exc
        self._bound.index = self.cuda_index
        try:
            trt = load_runtime_module(self.options.runtime)
        except MissingDependency as exc:
            raise BackendError(f"model '{self.model_id}': {exc}") from exc
        self.trt = trt
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise BackendError(f"model '{self.model_id}': cannot read engine {self.path}: {exc.strerror}") from exc
        if not data:
            raise BackendError(f"model '{self.model_id}': engine file {self.path} is empty")
        self._logger = _make_logger(trt, self._messages)
        self.runtime = trt.Runtime(self._logger)
        if self.runtime is None:
            raise BackendError(f"model '{self.model_id}': TensorRT runtime cannot start: {self._last_errors()}")
        if device.processor == "dla":
            cores = int(getattr(self.runtime, "num_DLA_cores", 0) or 0)
            if device.index >= cores:
                raise BackendError(f"model '{self.model_id}': device {device}: this box has {cores} DLA core(s)"
                                   + (" (DLA cores exist on Jetson AGX/NX Orin and Xavier)" if cores == 0 else ""))
            self.runtime.DLA_core = device.index  # must be set before deserializing
        self._preflight()  # the manifest against this host, so a mismatch is named before TensorRT says None
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"model '{self.model_id}': TensorRT cannot load engine {self.path}: "
                               f"{self._last_errors() or 'deserialize_cuda_engine returned None'}")
        self._read_io()
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"model '{self.model_id}': cannot create an execution context: "
                               f"{self._last_errors() or 'out of device memory?'}")
        self._compute = cu.Stream()
        self._copy = cu.Stream()
        self.mapped = (self.options.mapped_memory == "on"
                       or (self.options.mapped_memory == "auto" and self.device_info.integrated))

    def _preflight(self) -> None:
        host = compat.HostFacts(
            {compat.flavour_of(self.trt): str(getattr(self.trt, "__version__", "?"))}, self.device_info.name,
            self.device_info.compute_capability, self._cu.device_count(),
            int(getattr(self.runtime, "num_DLA_cores", 0) or 0))
        diffs = compat.preflight(self.path, host, self.device)
        for diff in diffs:
            if not diff.fatal:
                log.warning("model '%s': %s", self.model_id, diff.message)
        if compat.fatal(diffs):
            raise BackendError(f"model '{self.model_id}': engine {self.path} {compat.verdict(diffs)}")

    def _last_errors(self) -> str:
        return "; ".join(self._messages[-3:])

    def _read_io(self) -> None:
        trt, engine = self.trt, self.engine
        self.inputs, self.outputs = [], []
        self._profile_max: dict[str, tuple[int, ...]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            try:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            except TypeError as exc:
                raise BackendError(f"model '{self.model_id}': tensor '{name}' has a type numpy lacks: {exc}") from exc
            spec = TensorSpec(name, tuple(d if d >= 0 else None for d in shape), dtype)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(spec)
                if any(d < 0 for d in shape):
                    _min, _opt, max_shape = engine.get_tensor_profile_shape(name, 0)
                    self._profile_max[name] = tuple(int(d) for d in max_shape)
            else:
                self.outputs.append(spec)

    @property
    def batch_limit(self) -> int | None:
        if not self.inputs or self.inputs[0].shape[0] is not None:
            return None
        max_shape = self._profile_max.get(self.inputs[0].name)
        return max_shape[0] if max_shape else None

    def describe(self) -> str:
        version = getattr(self.trt, "__version__", "?")
        where = str(self.device) if self.device.processor == "dla" else f"gpu:{self.cuda_index}"
        return (f"{self.trt.__name__} {version} on {where} ({self.device_info.name}, "
                f"{self.device_info.arch}{', mapped memory' if self.mapped else ''})")

    def _bind_thread(self) -> None:
        # the runtime API makes the device's primary context current per thread
        if getattr(self._bound, "index", None) != self.cuda_index:
            self._cu.set_device(self.cuda_index)
            self._bound.index = self.cuda_index

    # -- the synchronous path: warm-up of the bare engine, benchmarks, numpy feeds --------------------------
    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cu = self._cu
        try:
            self._bind_thread()
            spec = self.inputs[0]
            array = np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype)
            n = array.shape[0]
            bufs = self._host_feed.get(n)
            if bufs is None:
                if spec.shape[0] is None:
                    self.context.set_input_shape(spec.name, array.shape)
                inp = cu.DeviceBuffer(array.nbytes)
                outs = []
                for out in self.outputs:
                    shape = tuple(self.context.get_tensor_shape(out.name))
                    host = cu.HostBuffer(shape, out.dtype)
                    outs.append((host, cu.DeviceBuffer(host.nbytes)))
                bufs = self._host_feed[n] = (inp, outs, array.shape)
            inp, outs, shape = bufs
            if spec.shape[0] is None:
                self.context.set_input_shape(spec.name, shape)
            cu.check(cu.cudart().cudaMemcpy(inp.ptr, array.ctypes.data, array.nbytes,
                                            cu.cudart().cudaMemcpyKind.cudaMemcpyHostToDevice), "cudaMemcpy(h2d)")
            self.context.set_tensor_address(spec.name, inp.ptr)
            for out, (_host, dev) in zip(self.outputs, outs):
                self.context.set_tensor_address(out.name, dev.ptr)
            self._execute(self._compute)
            for host, dev in outs:
                cu.copy_async(host.ptr, dev.ptr, host.nbytes, "d2h", self._compute)
            self._compute.synchronize()
            return [host.array.copy() for host, _ in outs]
        except cu.CudaError as exc:
            raise BackendError(f"model '{self.model_id}': {exc}") from exc

    def _execute(self, stream) -> None:
        if not self.context.execute_async_v3(stream.address):
            raise BackendError(f"model '{self.model_id}': execute_async_v3 failed: "
                               f"{self._last_errors() or 'no message from TensorRT'}")

    # -- the GPU input stage and its buffer sets ---------------------------------------------------------
    @property
    def buffer_sets(self) -> int:  # type: ignore[override]
        return self.options.buffer_sets

    def _open_input_stage_impl(self, config, batch: int, fixed_batch: bool) -> InputStage:
        cu = self._cu
        self._close_sets()
        spec = self.inputs[0]
        in_shape = (batch, *spec.shape[1:])
        if any(d is None for d in in_shape[1:]):
            # a dynamic H/W: the config's size decides (the Preprocessor check says so when it is missing)
            if config.size is None:
                raise ValueError(f"engine input {spec.shape} has a dynamic height/width: set preprocess.size")
            h, w = config.size
            in_shape = (batch, 3, h, w) if config.layout == "nchw" else (batch, h, w, 3)
        try:
            self._bind_thread()
            if spec.shape[0] is None or any(d is None for d in spec.shape):
                self.context.set_input_shape(spec.name, in_shape)
            out_shapes = [tuple(int(d) for d in self.context.get_tensor_shape(o.name)) for o in self.outputs]
            for _ in range(self.buffer_sets):
                s = _Set()
                s.input = cu.DeviceBuffer(int(np.prod(in_shape)) * spec.dtype.itemsize)
                for out, shape in zip(self.outputs, out_shapes):
                    host = cu.HostBuffer(shape, out.dtype, mapped=self.mapped)
                    s.outputs_host.append(host)
                    s.outputs_device.append(None if self.mapped else cu.DeviceBuffer(host.nbytes))
                s.uploaded = cu.Event(timing=False)
                s.start = cu.Event()
                s.done = cu.Event(blocking=self.options.host_wait == "block")
                self._sets.append(s)
            self._in_shape = in_shape
            stage = GpuInputStage(config, in_shape, spec.dtype, self.buffer_sets, [s.input.ptr for s in self._sets],
                                  self.device_info.arch, self.mapped, fixed_batch,
                                  cache_dir=self.options.kernel_cache or _default_cache_dir())
        except Exception as exc:  # CUDA errors, and NVRTC missing or failing to compile the kernel
            self._close_sets()
            raise BackendError(f"model '{self.model_id}': cannot set up the GPU input stage: {exc}") from exc
        stage.device_index = self.cuda_index  # device images on this GPU are read in place
        self._stage = stage
        self._warm_up_stage(stage, batch)
        return stage

    def _warm_up_stage(self, stage, batch: int) -> None:
        """Run every set through the whole path twice: TensorRT's first enqueue does lazy set-up that must not
        be captured, and the second builds the CUDA graphs, so the first real frame runs at full speed."""
        t0 = time.perf_counter()
        image = np.full((480, 640, 3), 114, np.uint8)
        n = batch
        for _ in range(2):
            for i in range(self.buffer_sets):
                for item in range(n):
                    stage.write(i, item, image)
                self.submit(i, n).wait()
        log.info("model '%s': GPU path warmed up in %.1f ms (%s)", self.model_id, (time.perf_counter() - t0) * 1e3,
                 "CUDA graphs" if self._graphs_ok else "eager launches")

    def _close_sets(self) -> None:
        for graph in self._graphs.values():
            graph.close()
        self._graphs.clear()
        for s in self._sets:
            for buf in (s.input, *s.outputs_device, *s.outputs_host, s.uploaded, s.start, s.done):
                if buf is not None:
                    buf.close()
        self._sets = []

    # -- the hot path ------------------------------------------------------------------------------------
    def submit(self, set_index: int, n: int) -> InferHandle:
        if not self.is_active:
            raise BackendError(f"model '{self.model_id}': submit() before activate()")
        cu = self._cu
        stage = self._stage
        s = self._sets[set_index]
        nb = stage.batch if stage.fixed_batch else n
        try:
            self._bind_thread()
            stage.enqueue_upload(set_index, n, self._copy)
            s.uploaded.record(self._copy)
            self._compute.wait(s.uploaded)
            s.start.record(self._compute)
            self._enqueue_compute_or_graph(set_index, n, nb)
            s.done.record(self._compute)
        except cu.CudaError as exc:
            raise BackendError(f"model '{self.model_id}': {exc}") from exc
        return _GpuInference(self, set_index, nb)

    def _enqueue_compute_or_graph(self, set_index: int, n: int, nb: int) -> None:
        key = (set_index, n, nb)
        generation = self._stage.generation[set_index]
        if self._graph_generation.get(set_index) != generation:
            for k in [k for k in self._graphs if k[0] == set_index]:
                self._graphs.pop(k).close()
            self._graph_generation[set_index] = generation
        graph = self._graphs.get(key)
        if graph is not None:
            graph.launch(self._compute)
            return
        if self._graphs_ok and key in self._eager_seen:
            try:
                graph = self._cu.Graph.capture(self._compute, lambda: self._enqueue_compute(set_index, n, nb))
            except Exception as exc:  # any capture failure: eager launches from now on, said once
                self._graphs_ok = False
                log.warning("model '%s': CUDA graph capture failed (%s); running eager launches", self.model_id,
                            exc)
            else:
                self._graphs[key] = graph
                graph.launch(self._compute)
                return
        self._eager_seen.add(key)
        self._enqueue_compute(set_index, n, nb)

    def _enqueue_compute(self, set_index: int, n: int, nb: int) -> None:
        s = self._sets[set_index]
        self._stage.enqueue_kernel(set_index, n, self._compute)
        spec = self.inputs[0]
        if spec.shape[0] is None:
            self.context.set_input_shape(spec.name, (nb, *self._in_shape[1:]))
        self.context.set_tensor_address(spec.name, s.input.ptr)
        for out, host, dev in zip(self.outputs, s.outputs_host, s.outputs_device):
            self.context.set_tensor_address(out.name, host.device_ptr if dev is None else dev.ptr)
        self._execute(self._compute)
        for host, dev in zip(s.outputs_host, s.outputs_device):
            if dev is not None:
                nbytes = host.nbytes // host.shape[0] * nb if host.shape else host.nbytes
                self._cu.copy_async(host.ptr, dev.ptr, nbytes, "d2h", self._compute)

    def _collect(self, set_index: int, nb: int) -> tuple[list[np.ndarray], float]:
        cu = self._cu
        s = self._sets[set_index]
        try:
            self._bind_thread()
            s.done.wait()  # not synchronize(): cuda-python holds the GIL for the GPU's whole time there
            ms = s.done.elapsed_ms(s.start)
        except cu.CudaError as exc:
            raise BackendError(f"model '{self.model_id}': {exc}") from exc
        return [host.array[:nb] for host in s.outputs_host], ms

    # -- teardown --------------------------------------------------------------------------------------------
    def _deactivate_impl(self) -> None:
        cu = self._cu
        try:
            self._bind_thread()
            for stream in (self._compute, self._copy):
                if stream is not None:
                    stream.synchronize()
        except cu.CudaError as exc:
            log.error("model '%s': while stopping: %s", self.model_id, exc)
        self._stage = None  # closed by Backend.deactivate once the streams are idle
        self._close_sets()
        for inp, outs, _shape in self._host_feed.values():
            inp.close()
            for host, dev in outs:
                host.close()
                dev.close()
        self._host_feed.clear()
        for stream in (self._compute, self._copy):
            if stream is not None:
                stream.close()
        self._compute = self._copy = None
        self.context = None  # TensorRT frees its objects when the last reference goes
        self.engine = None
        self.runtime = None
