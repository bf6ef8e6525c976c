"""Backends: `schema.py` holds every backend's options model, one module per backend holds its code (heavy
libraries are imported inside each plugin). `BACKENDS` maps the `backend:` key to its implementation, imported
on first use, so that validating a config loads no backend. A new backend is one module plus its options model
in `schema.py` and one line here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..devices import parse_device
from ..plugins import Registry
from .errors import BackendError
from .schema import BACKEND_CHOICES, BACKEND_OPTIONS, resolve_backend_type

if TYPE_CHECKING:
    from .base import Backend

BACKENDS: Registry[Backend] = Registry("backend", {
    "onnxruntime": "edgeinfer.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "edgeinfer.backends.tensorrt:TensorRTBackend",
    "triton": "edgeinfer.backends.triton:TritonBackend",
})
# wraps a remote backend with a local one behind it (`backend_options.fallback`); not a `backend:` key
WRAPPERS: Registry[Backend] = Registry("backend wrapper", {"fallback": "edgeinfer.backends.fallback:FallbackBackend"})


def create_backend(model_id: str, requested: str, path: Path, options: dict, device: str = "auto") -> Backend:
    kind = resolve_backend_type(requested, path)
    validated = BACKEND_OPTIONS[kind].model_validate(options)
    backend = BACKENDS[kind](model_id, path, validated)
    backend.device = parse_device(device)
    fallback = getattr(validated, "fallback", None)  # an options field (remote backends have it), not a probe
    if fallback is not None:
        local = create_backend(model_id, fallback.backend, fallback.path or path, fallback.backend_options,
                               device)
        backend = WRAPPERS["fallback"](backend, local, fallback)
        backend.device = local.device  # `device:` is where this box runs the model: the local backend's
    return backend


__all__ = ["BACKENDS", "BACKEND_CHOICES", "BackendError", "create_backend", "resolve_backend_type"]
