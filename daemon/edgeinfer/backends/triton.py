"""Triton Inference Server as a remote backend (tritonclient; gRPC by default, HTTP as an option).

Tensors are built on the host by the CPU input stage, exactly as for ONNX Runtime, and sent raw. Input and
output names, shapes and dtypes come from the server's model metadata, so the preprocessor and decoder fit the
served model the same way they fit a local file. Every request carries a deadline (`deadline_ms`, by default
from the model's `budget_ms`); every failure is a `BackendError` that names the server URL and the model.

With `fallback:` set, `create_backend` wraps this backend in `FallbackBackend` (fallback.py), which serves from a
local backend while the server is unreachable, late or not ready.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..lazy import lazy_import
from .base import Backend, BackendError, TensorSpec
from .schema import TritonOptions

log = logging.getLogger(__name__)

INSTALL_HINT = "Install it with: pip install 'tritonclient[grpc,http]' (or '.[triton]' in the checkout)."
# gRPC reconnect backoff grows to 120 s by default: a server back after a restart would then be noticed minutes
# later. Capped at 1 s so the health prober sees it within a probe or two.
GRPC_RECONNECT_MS = (100, 1000)
_MAX_MESSAGE = 2**31 - 1  # tritonclient's own default; image tensors exceed gRPC's 4 MB default










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
        self._requests: dict[int, tuple[Any, list[Any]]] = {}  # batch size -> (InferInput, requested outputs)

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
        self.inputs = [self._spec(*i) for i in inputs]
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
        # A model's first request on the server loads and initializes it there (seconds on a cold Python or
        # ONNX backend): sent here with the connect timeout, so the deadline-bound warm-up that follows
        # measures the server at its normal speed.
        self._send({s.name: self._zeros(s, 1) for s in self.inputs}, self._connect_s)

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._send(feeds, self.deadline_s)

    def _send(self, feeds: dict[str, np.ndarray], timeout_s: float) -> list[np.ndarray]:
        if len(feeds) != 1:
            raise BackendError(f"{self._where()}: image models take one input; got {list(feeds)}")
        name, array = next(iter(feeds.items()))
        inp, outs = self._request(name, array)
        inp.set_data_from_numpy(np.ascontiguousarray(array))
        kwargs: dict[str, Any] = {"outputs": outs}
        if self.options.compression != "none":
            key = "compression_algorithm" if self.options.protocol == "grpc" else "request_compression_algorithm"
            kwargs[key] = self.options.compression
        client = self._client()
        result = self._call("infer", client.infer, self.server_model, [inp], model_version=self.options.model_version,
                            timeout_s=timeout_s, **kwargs)
        return [result.as_numpy(n) for n in self._output_names]

    def _request(self, name: str, array: np.ndarray) -> tuple[Any, list[Any]]:
        """InferInput and requested outputs, kept per batch size so the hot path builds no request objects."""
        batch = array.shape[0] if array.ndim else 0
        cached = self._requests.get(batch)
        if cached is None:
            mod = self._module()
            datatype = lazy_import("tritonclient.utils", INSTALL_HINT).np_to_triton_dtype(array.dtype)
            cached = (mod.InferInput(name, list(array.shape), datatype),
                      [mod.InferRequestedOutput(n) for n in self._output_names])
            self._requests[batch] = cached
        return cached

    def _deactivate_impl(self) -> None:
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
