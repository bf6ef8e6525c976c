"""Backends: `schema.py` holds every backend's options model, one module per backend holds its code (heavy
libraries are imported inside each plugin). `BACKENDS` maps the `backend:` key to its implementation, imported
on first use. A new backend is one module plus its options model in `schema.py` and one line here."""

from __future__ import annotations

from pathlib import Path

from ..devices import parse_device
from ..plugins import Registry
from .base import Backend, BackendError, TensorSpec
from .schema import BACKEND_CHOICES, BACKEND_OPTIONS, resolve_backend_type

BACKENDS: Registry[Backend] = Registry("backend", {
    "onnxruntime": "edgeinfer.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "edgeinfer.backends.tensorrt:TensorRTBackend",
    "triton": "edgeinfer.backends.triton:TritonBackend",
})


def create_backend(model_id: str, requested: str, path: Path, options: dict, device: str = "auto") -> Backend:
    kind = resolve_backend_type(requested, path)
    validated = BACKEND_OPTIONS[kind].model_validate(options)
    backend = BACKENDS[kind](model_id, path, validated)
    backend.device = parse_device(device)
    fallback = getattr(validated, "fallback", None)  # an options field, not a plugin probe: only remote ones have it
    if fallback is not None:  # a remote backend with a local one behind it (fallback.py)
        from .fallback import FallbackBackend  # the wrapper is needed only with a fallback configured

        local = create_backend(model_id, fallback.backend, fallback.path or path, fallback.backend_options,
                               device)
        backend = FallbackBackend(backend, local, fallback)
        backend.device = local.device  # `device:` is where this box runs the model: the local backend's
    return backend


__all__ = ["BACKENDS", "BACKEND_CHOICES", "Backend", "BackendError", "TensorSpec", "create_backend",
           "resolve_backend_type"]
