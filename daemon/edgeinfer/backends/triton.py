"""Triton Inference Server as a remote backend (tritonclient; gRPC by default, HTTP as an option).

Tensors are built on the host by the CPU input stage, exactly as for ONNX Runtime, and sent raw. Input and
output names, shapes and dtypes come from the server's model metadata, so the preprocessor and decoder fit the
served model the same way they fit a local file. Every request carries a deadline (`deadline_ms`, by default
from the model's `budget_ms`); every failure is a `BackendError` that names the server URL and the model.

With `fallback:` set, `create_backend` wraps this backend in `FallbackBackend` (fallback.py), which serves from a
local backend while the server is unreachable, late or not ready.

`send: uint8` sends the letterboxed/resized BGR frame (uint8, N x H x W x 3) and `send: jpeg` a JPEG of it (BYTES,
N x 1) to a server model that preprocesses (an ensemble: examples/triton/model_repository); the input stage
then stops after the resize (`preprocess_config`), and the server does colour order, scale and layout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..lazy import lazy_import
from ..preprocess import PreprocessConfig, Preprocessor
from .base import Backend, BackendError, CpuInputStage, InferHandle, InputStage, TensorSpec
from .schema import TritonOptions
from .triton_shm import ShmBufferSet, ShmPool, server_is_local

log = logging.getLogger(__name__)

INSTALL_HINT = "Install it with: pip install 'tritonclient[grpc,http]' (or '.[triton]' in the checkout)."
# gRPC reconnect backoff grows to 120 s by default: a server back after a restart would then be noticed minutes
# later. Capped at 1 s so the health prober sees it within a probe or two.
GRPC_RECONNECT_MS = (100, 1000)
_MAX_MESSAGE = 2**31 - 1  # tritonclient's own default; image tensors exceed gRPC's 4 MB default
SYNC_SET = "sync"  # the shared-memory set of `infer` (warm-up, probes, the fallback's calls)


class _ShmInputStage(CpuInputStage):
    """The CPU preprocessor writing straight into each buffer set's shared-memory input region."""

    def __init__(self, config: PreprocessConfig, spec: TensorSpec, batch: int, fixed_batch: bool,
                 sets: list[ShmBufferSet], buffer: np.ndarray):
        super().__init__(config, spec, batch, fixed_batch, 0)
        self.sets = len(sets)
        self.preprocessors = [Preprocessor(config, (batch, *spec.shape[1:]), spec.dtype,
                                           buffer=s.input.array(buffer.dtype, buffer.shape)) for s in sets]


class _AsyncInference(InferHandle):
    """A gRPC request in flight; `wait` gives its outputs (views into shared memory when it is used)."""

    def __init__(self, backend: TritonBackend, set_index: int, t0: float):
        self._backend, self._set_index, self._t0 = backend, set_index, t0
        self._event = threading.Event()
        self._result: Any = None
        self._error: Any = None
        self._ms = 0.0

    def callback(self, result: Any, error: Any) -> None:  # gRPC's thread
        self._ms = (time.perf_counter() - self._t0) * 1e3
        self._result, self._error = result, error
        self._event.set()

    def wait(self) -> tuple[list[np.ndarray], float]:
        backend = self._backend
        if not self._event.wait(backend.deadline_s + 1.0):  # gRPC ends the call at the deadline; this is a backstop
            backend._failed()
            raise BackendError(f"{backend._where()}: infer failed: no reply {backend.deadline_s + 1.0:.1f} s "
                               "after the deadline")
        if self._error is not None:
            backend._failed()
            raise BackendError(f"{backend._where()}: infer failed: {_describe(self._error)}")
        return backend._outputs(self._result, backend._shm_set(self._set_index), copy=False), self._ms

class TritonBackend(Backend):
    type = "triton"
    options_model = TritonOptions
    options: TritonOptions
    remote = True  # not a fallback candidate

    def __init__(self, model_id: str, path: Path, options: TritonOptions):
        super().__init__(model_id, path, options)
        self.server_model = options.model_name or model_id
        self.deadline_s = (options.deadline_ms or 1000.0) / 1e3
        self._connect_s = options.connect_timeout_ms / 1e3
        self._headers = dict(options.headers)
        self._clients = threading.local()  # HTTP clients are gevent-based: one per OS thread
        self._grpc_client: Any = None
        # (shared-memory set or None, batch size) -> (InferInput, requested outputs)
        self._requests: dict[tuple[Any, int], tuple[Any, list[Any]]] = {}
        self._shm: ShmPool | None = None  # set while tensors go through shared memory
        self._shm_lock = threading.Lock()  # the sync set is used by the hot path and the fallback's prober
        self._output_bytes: list[int] | None = None  # of one image per output; None: not known up front
        self._jpeg_batched = True  # send: jpeg: the server's input has a batch dimension ([batch, 1], not [1])

    @property
    def buffer_sets(self) -> int:  # type: ignore[override]
        return self.options.buffer_sets

    @property
    def uses_shared_memory(self) -> bool:
        return self._shm is not None

    @property
    def shared_memory_wanted(self) -> bool:
        mode = self.options.shared_memory
        if self.options.send == "jpeg":  # a JPEG is for the network; on this host uint8 through memory is cheaper
            return False
        return mode == "system" or (mode == "auto" and self.options.tls is None and server_is_local(self.options.url))

    @property
    def endpoint(self) -> str:
        scheme = {"grpc": "grpcs" if self.options.tls else "grpc", "http": "https" if self.options.tls else "http"}
        return f"{scheme[self.options.protocol]}://{self.options.url}"

    def _where(self) -> str:
        return f"model '{self.model_id}': Triton {self.endpoint} model '{self.server_model}'"

    # -- clients -------------------------------------------------------------------------------------------
    def _module(self):
        if self.options.protocol == "grpc":
            return lazy_import("tritonclient.grpc", INSTALL_HINT)
        return lazy_import("tritonclient.http", INSTALL_HINT)

    def _client(self):
        if self.options.protocol == "grpc":  # gRPC clients are thread-safe: one channel, reconnected by gRPC
            if self._grpc_client is None:
                self._grpc_client = self._make_client()
            return self._grpc_client
        client = getattr(self._clients, "client", None)
        if client is None:
            client = self._clients.client = self._make_client()
        return client

    def _make_client(self):
        mod = self._module()
        tls = self.options.tls
        if self.options.protocol == "grpc":
            args = [("grpc.max_send_message_length", _MAX_MESSAGE), ("grpc.max_receive_message_length", _MAX_MESSAGE),
                    ("grpc.initial_reconnect_backoff_ms", GRPC_RECONNECT_MS[0]),
                    ("grpc.min_reconnect_backoff_ms", GRPC_RECONNECT_MS[0]),
                    ("grpc.max_reconnect_backoff_ms", GRPC_RECONNECT_MS[1])]
            return mod.InferenceServerClient(
                self.options.url, ssl=tls is not None, channel_args=args,
                root_certificates=_path(tls and tls.root_certificates), private_key=_path(tls and tls.private_key),
                certificate_chain=_path(tls and tls.certificate_chain))
        ssl_options = {}
        if tls is not None:
            ssl_options = {k: v for k, v in {"ca_certs": _path(tls.root_certificates), "keyfile": _path(
                tls.private_key), "certfile": _path(tls.certificate_chain)}.items() if v}
        # HTTP has no per-call deadline: the network timeout of the connection is the deadline
        return mod.InferenceServerClient(self.options.url, ssl=tls is not None, ssl_options=ssl_options or None,
                                         connection_timeout=self._connect_s, network_timeout=self.deadline_s)

    def _close_clients(self) -> None:
        for client in (self._grpc_client, getattr(self._clients, "client", None)):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a broken channel must not hide the reason we are closing it
                    log.debug("closing the Triton client failed", exc_info=True)
        self._grpc_client = None
        self._clients = threading.local()

    def _call(self, what: str, fn, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """Run one client call; any failure becomes a BackendError naming the server and the call."""
        if self.options.protocol == "grpc" and timeout_s is not None:
            kwargs["client_timeout"] = timeout_s
        headers = self._request_headers()
        if headers:
            kwargs["headers"] = headers
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # tritonclient, grpc, gevent and socket errors alike
            raise BackendError(f"{self._where()}: {what} failed: {_describe(exc)}") from exc

    def _request_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        for header, var in self.options.headers_from_env.items():
            value = os.environ.get(var)
            if value is None:
                raise BackendError(f"{self._where()}: header '{header}' comes from environment variable "
                                   f"{var}, which is not set")
            headers[header] = value
        return headers

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        client = self._client()
        version = self.options.model_version
        t = self._connect_s
        if not self._call("server_live", client.is_server_live, timeout_s=t):
            raise BackendError(f"{self._where()}: server is not live")
        if not self._call("server_ready", client.is_server_ready, timeout_s=t):
            raise BackendError(f"{self._where()}: server is live but not ready")
        if not self._call("model_ready", client.is_model_ready, self.server_model, version, timeout_s=t):
            known = self._repository_models(client)
            raise BackendError(f"{self._where()}: model version '{version or 'default'}' is not ready on the "
                               f"server; models there: {known or 'none'}")
        meta = self._call("model_metadata", client.get_model_metadata, self.server_model, version, timeout_s=t)
        inputs, outputs = _tensors(meta, "inputs"), _tensors(meta, "outputs")
        self.inputs = self._image_inputs(client, inputs)
        self.outputs = [self._spec(*o) for o in outputs]
        names_in = [s.name for s in self.inputs]
        if self.options.input_name is not None and names_in != [self.options.input_name]:
            raise BackendError(f"{self._where()}: input_name '{self.options.input_name}' does not match the "
                               f"server's inputs {names_in}")
        if self.options.output_names is not None:
            by_name = {s.name: s for s in self.outputs}
            missing = [n for n in self.options.output_names if n not in by_name]
            if missing:
                raise BackendError(f"{self._where()}: output_names {missing} not among the server's outputs "
                                   f"{list(by_name)}")
            self.outputs = [by_name[n] for n in self.options.output_names]
        self._output_names = [s.name for s in self.outputs]
        self._requests.clear()
        self._max_batch = self._server_max_batch(client)
        self._close_shm()
        if self.shared_memory_wanted:
            sizes = [_item_bytes(o) for o in self.outputs]
            self._output_bytes = None if None in sizes else sizes  # type: ignore[assignment]
            self._shm = ShmPool(self.model_id)
        # A model's first request on the server loads and initializes it there (seconds on a cold Python or
        # ONNX backend): sent here with the connect timeout, so the deadline-bound warm-up that follows
        # measures the server at its normal speed.
        self._send({s.name: self._zeros(s, 1) for s in self.inputs}, self._connect_s)

    def _image_inputs(self, client: Any, inputs: list[tuple[str, str, list[int]]]) -> list[TensorSpec]:
        """The inputs the input stage fills: the server's, or with send uint8/jpeg the frame it takes."""
        send = self.options.send
        if send == "float":
            return [self._spec(*i) for i in inputs]
        if len(inputs) != 1:
            raise BackendError(f"{self._where()}: send: {send} needs a server model with one input, the frame; it "
                               f"has {[i[0] for i in inputs]}")
        name, datatype, shape = inputs[0]
        if send == "uint8":
            if datatype != "UINT8" or len(shape) != 4 or shape[3] != 3:
                raise BackendError(
                    f"{self._where()}: send: uint8 needs a server model that takes the frame, UINT8 [batch, height, "
                    f"width, 3], and preprocesses it (an ensemble, see examples/triton); its input '{name}' is "
                    f"{datatype} {shape} (send: float sends the network's input tensor)")
            return [self._spec(name, datatype, shape)]
        if datatype != "BYTES" or shape[-1:] != [1] or len(shape) > 2:
            raise BackendError(
                f"{self._where()}: send: jpeg needs a server model that takes one JPEG per image, BYTES [batch, 1], "
                f"and decodes and preprocesses it (an ensemble, see examples/triton); its input '{name}' is "
                f"{datatype} {shape}")
        height, width = self._image_size(client)
        self._jpeg_batched = len(shape) == 2
        return [TensorSpec(name, (None if self._jpeg_batched else 1, height, width, 3), np.dtype(np.uint8))]

    def _image_size(self, client: Any) -> tuple[int, int]:
        """The frame size a JPEG model takes (a BYTES input has no dims): its config's `image_size` parameter."""
        cfg = self._call("model_config", client.get_model_config, self.server_model, self.options.model_version,
                         timeout_s=self._connect_s)
        params = cfg.get("parameters", {}) if isinstance(cfg, dict) else cfg.config.parameters
        value = params.get("image_size")
        text = (value.get("string_value") if isinstance(value, dict) else value.string_value) if value else ""
        height, sep, width = str(text).partition("x")
        if not (sep and height.strip().isdigit() and width.strip().isdigit()):
            raise BackendError(f"{self._where()}: send: jpeg needs the frame size the model takes: give its config "
                               f"`parameters {{ key: \"image_size\" value {{ string_value: \"HxW\" }} }}` (e.g. "
                               f"416x416); found {text!r}")
        return int(height), int(width)

    def preprocess_config(self, config: PreprocessConfig) -> PreprocessConfig:
        """send: uint8/jpeg: the frame is only letterboxed/resized here (BGR, uint8, HWC); the server's
        preprocessing step does the rest, so colour, scale, mean/std, layout and dtype here are the identity."""
        if self.options.send == "float":
            return config
        return config.model_copy(update={"layout": "nhwc", "dtype": "uint8", "color": "bgr", "scale": 1.0,
                                         "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)})

    def _wire(self, array: np.ndarray) -> np.ndarray:
        """What goes into the request for the input stage's batch: the batch itself, or one JPEG per image."""
        if self.options.send != "jpeg":
            return array
        params = [cv2.IMWRITE_JPEG_QUALITY, self.options.jpeg_quality]
        out = np.empty((len(array), 1), dtype=np.object_)
        for i, image in enumerate(array):
            ok, data = cv2.imencode(".jpg", image, params)
            if not ok:
                raise BackendError(f"{self._where()}: cannot encode a {image.shape} frame as JPEG")
            out[i, 0] = data.tobytes()
        return out if self._jpeg_batched else out.reshape(1)

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._send(feeds, self.deadline_s)

    def _send(self, feeds: dict[str, np.ndarray], timeout_s: float) -> list[np.ndarray]:
        if len(feeds) != 1:
            raise BackendError(f"{self._where()}: image models take one input; got {list(feeds)}")
        name, array = next(iter(feeds.items()))
        if self._shm is None:
            return self._send_one(name, self._wire(array), None, timeout_s)
        with self._shm_lock:
            batch = array.shape[0] if array.ndim else 1
            shm_set = self._shm.sets.get(SYNC_SET)
            if shm_set is None or shm_set.input.size < array.nbytes or (
                    shm_set.output is not None and shm_set.output_sizes[0] < batch * self._output_bytes[0]):
                shm_set = self._create_shm_set(SYNC_SET, batch, array.nbytes)
            shm_set.input.array(array.dtype, array.shape)[...] = array
            # copied out: the next call (another buffer set's frame) reuses this region while this one is decoded
            return self._send_one(name, array, SYNC_SET, timeout_s, copy_outputs=True)

    def _send_one(self, name: str, array: np.ndarray, shm_key: Any, timeout_s: float,
                  copy_outputs: bool = False) -> list[np.ndarray]:
        inp, outs = self._request(name, array, shm_key)
        if shm_key is None:
            inp.set_data_from_numpy(np.ascontiguousarray(array))
        client = self._client()
        self._register(client)
        try:
            result = self._call("infer", client.infer, self.server_model, [inp],
                                model_version=self.options.model_version, timeout_s=timeout_s, **self._kwargs(outs))
        except BackendError:
            self._failed()
            raise
        return self._outputs(result, self._shm_set(shm_key), copy=copy_outputs)

    def _kwargs(self, outs: list[Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"outputs": outs}
        if self.options.compression != "none":
            key = "compression_algorithm" if self.options.protocol == "grpc" else "request_compression_algorithm"
            kwargs[key] = self.options.compression
        return kwargs

    def _request(self, name: str, array: np.ndarray, shm_key: Any = None) -> tuple[Any, list[Any]]:
        """InferInput and requested outputs, kept per (buffer set, batch size) so the hot path builds no request
        objects; with shared memory they name the set's regions instead of carrying data."""
        batch = array.shape[0] if array.ndim else 0
        cached = self._requests.get((shm_key, batch))
        if cached is None:
            mod = self._module()
            datatype = lazy_import("tritonclient.utils", INSTALL_HINT).np_to_triton_dtype(array.dtype)
            inp = mod.InferInput(name, list(array.shape), datatype)
            outs = [mod.InferRequestedOutput(n) for n in self._output_names]
            shm_set = self._shm_set(shm_key)
            if shm_set is not None:
                inp.set_shared_memory(shm_set.input.name, array.nbytes)
                if shm_set.output is not None:
                    for out, offset, size in zip(outs, shm_set.output_offsets, shm_set.output_sizes):
                        out.set_shared_memory(shm_set.output.name, size, offset=offset)
            cached = (inp, outs)
            self._requests[(shm_key, batch)] = cached
        return cached

    def _outputs(self, result: Any, shm_set: ShmBufferSet | None, copy: bool) -> list[np.ndarray]:
        if shm_set is None or shm_set.output is None:
            return [result.as_numpy(n) for n in self._output_names]
        outputs = []
        for spec, offset in zip(self.outputs, shm_set.output_offsets):
            meta = result.get_output(spec.name)  # gRPC: protobuf, HTTP: dict
            shape = tuple(int(d) for d in (meta["shape"] if isinstance(meta, dict) else meta.shape))
            view = shm_set.output.array(spec.dtype, shape, offset)
            outputs.append(view.copy() if copy else view)
        return outputs

    # -- shared memory -------------------------------------------------------------------------------------
    def _shm_set(self, key: Any) -> ShmBufferSet | None:
        return self._shm.sets.get(key) if self._shm is not None and key is not None else None

    def _create_shm_set(self, key: Any, batch: int, input_nbytes: int) -> ShmBufferSet:
        assert self._shm is not None
        outputs = [batch * b for b in self._output_bytes] if self._output_bytes is not None else None
        try:
            shm_set = self._shm.create_set(key, input_nbytes, outputs)
        except OSError as exc:
            raise BackendError(f"{self._where()}: cannot create shared memory in /dev/shm: {exc}; set "
                               "backend_options.shared_memory: none") from exc
        for cache_key in [k for k in self._requests if k[0] == key]:
            del self._requests[cache_key]  # they named the old regions
        return shm_set

    def _register(self, client: Any) -> None:
        if self._shm is not None:
            self._shm.ensure_registered(client, lambda what, fn, *a: self._call(what, fn, *a,
                                                                               timeout_s=self._connect_s))

    def _failed(self) -> None:
        """A request failed: a restarted server forgets shared-memory registrations; register again next time."""
        if self._shm is not None:
            self._shm.mark_stale()

    def _close_shm(self) -> None:
        pool, self._shm = self._shm, None
        if pool is None:
            return
        try:
            client = self._client()  # HTTP: this thread's own; unregistering frees the server's mapping
        except Exception:  # no client can be made: the unlink still runs
            client = None
        pool.close(client, lambda what, fn, *a: self._call(what, fn, *a, timeout_s=min(self._connect_s, 1.0)))
        self._requests.clear()

    # -- the pipeline's path: buffer sets, requests in flight -----------------------------------------------
    def _open_input_stage_impl(self, config: PreprocessConfig, batch: int, fixed_batch: bool) -> InputStage:
        spec = self.image_input or self.inputs[0]
        if self._shm is None:
            return super()._open_input_stage_impl(config, batch, fixed_batch)
        # the preprocessor resolves the buffer's shape (open height/width from the config): learn it from one
        buffer = CpuInputStage(config, spec, batch, fixed_batch, 1).preprocessors[0].buffer
        sets = [self._create_shm_set(i, batch, buffer.nbytes) for i in range(self.buffer_sets)]
        return _ShmInputStage(config, spec, batch, fixed_batch, sets, buffer)

    def submit(self, set_index: int, n: int) -> InferHandle:
        """gRPC: send and return at once, so the next set is prepared (and sent) while this one is in flight;
        with shared memory the input stage already wrote the tensor where the server reads it. HTTP: one
        request at a time (its client is not thread-safe)."""
        if self.options.protocol != "grpc":
            return super().submit(set_index, n)
        if not self.is_active or self.input_stage is None:
            return super().submit(set_index, n)  # raises the lifecycle error
        feeds = self.input_stage.feeds(set_index, n)
        if len(feeds) != 1:
            raise BackendError(f"{self._where()}: image models take one input; got {list(feeds)}")
        name, array = next(iter(feeds.items()))
        shm_key = set_index if self._shm is not None else None
        if shm_key is None:
            array = self._wire(array)
        inp, outs = self._request(name, array, shm_key)
        if shm_key is None:
            inp.set_data_from_numpy(np.ascontiguousarray(array))
        client = self._client()
        self._register(client)
        handle = _AsyncInference(self, set_index if shm_key is not None else None, time.perf_counter())
        try:
            self._call("infer", client.async_infer, self.server_model, [inp], handle.callback,
                       model_version=self.options.model_version, timeout_s=self.deadline_s, **self._kwargs(outs))
        except BackendError:
            self._failed()
            raise
        return handle

    def _deactivate_impl(self) -> None:
        self._close_shm()  # before the clients: unregistering needs one
        self._close_clients()

    def describe(self) -> str:
        return f"triton[{self.endpoint} {self.server_model}]"

    # -- health (used by the fallback's prober, off the hot path) -------------------------------------------
    def probe(self) -> str | None:
        """None when the server is live and ready, the model is ready and answers one request within the
        deadline; else why not."""
        try:
            client = self._client()
            t = self._connect_s
            if not self._call("server_live", client.is_server_live, timeout_s=t):
                return "server not live"
            if not self._call("server_ready", client.is_server_ready, timeout_s=t):
                return "server not ready"
            if not self._call("model_ready", client.is_model_ready, self.server_model, self.options.model_version,
                              timeout_s=t):
                return "model not ready"
            # ready is not enough: a request must also come back within the deadline (a cold or overloaded
            # server answers health calls but misses deadlines)
            t0 = time.perf_counter()
            self.infer({s.name: self._zeros(s, 1) for s in self.inputs})
            took = time.perf_counter() - t0
            if took > self.deadline_s:
                return f"probe inference took {took * 1e3:.0f} ms > deadline {self.deadline_s * 1e3:.0f} ms"
            return None
        except BackendError as exc:
            return str(exc)

    @property
    def batch_limit(self) -> int | None:
        return getattr(self, "_max_batch", None)

    def _server_max_batch(self, client) -> int | None:
        """The model config's max_batch_size (Triton's batcher refuses larger batches); None when the server
        does not batch the model or does not show its config."""
        try:
            cfg = self._call("model_config", client.get_model_config, self.server_model, self.options.model_version,
                             timeout_s=self._connect_s)
        except BackendError as exc:
            log.debug("%s", exc)
            return None
        if isinstance(cfg, dict):
            value = cfg.get("max_batch_size", 0)
        else:
            value = cfg.config.max_batch_size
        return int(value) if value and int(value) > 0 else None

    def _repository_models(self, client) -> str:
        try:
            index = self._call("repository_index", client.get_model_repository_index, timeout_s=self._connect_s)
        except BackendError as exc:  # servers may restrict the repository API (pytriton does)
            return f"unknown (repository index not readable: {str(exc).rpartition('failed: ')[2][:120]})"
        entries = index.get("models", []) if isinstance(index, dict) else getattr(index, "models", [])
        names = []
        for e in entries if isinstance(entries, list) else list(entries):
            name = e.get("name") if isinstance(e, dict) else e.name
            state = e.get("state") if isinstance(e, dict) else e.state
            names.append(f"{name} ({state or 'unloaded'})")
        return ", ".join(names)

    def _spec(self, name: str, datatype: str, shape: list[int]) -> TensorSpec:
        try:
            dtype = lazy_import("tritonclient.utils", INSTALL_HINT).triton_to_np_dtype(datatype)
        except Exception:
            dtype = None
        if dtype is None or datatype == "BYTES":
            raise BackendError(f"{self._where()}: tensor '{name}' has unsupported type {datatype}")
        return TensorSpec(name, tuple(int(d) if int(d) > 0 else None for d in shape), np.dtype(dtype))


def _tensors(meta: Any, key: str) -> list[tuple[str, str, list[int]]]:
    """(name, datatype, shape) from gRPC (protobuf) or HTTP (dict) model metadata."""
    items = meta.get(key, []) if isinstance(meta, dict) else getattr(meta, key)
    out = []
    for t in items:
        if isinstance(t, dict):
            out.append((t["name"], t["datatype"], [int(d) for d in t["shape"]]))
        else:
            out.append((t.name, t.datatype, [int(d) for d in t.shape]))
    return out


def _item_bytes(spec: TensorSpec) -> int | None:
    """Bytes of one image's worth of a tensor (batch dimension excluded); None when a dimension is open."""
    dims = spec.shape[1:] if spec.dynamic_batch else spec.shape
    if any(d is None for d in dims):
        return None
    count = 1
    for d in dims:
        count *= int(d)
    return count * spec.dtype.itemsize


def _path(value: Path | None) -> str | None:
    return os.fspath(value) if value else None


def _describe(exc: Exception) -> str:
    """gRPC's status name first (UNAVAILABLE, DEADLINE_EXCEEDED): it is what an operator searches for."""
    status = getattr(exc, "status", None)
    code = status() if callable(status) else None
    text = getattr(exc, "message", None)
    text = text() if callable(text) else str(exc)
    text = " ".join(str(text).split())[:300]
    if code:
        return f"{str(code).removeprefix('StatusCode.')}: {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
