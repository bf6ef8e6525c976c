"""Backends, registered by their `backend:` key. Heavy libraries are imported inside each plugin."""

from __future__ import annotations

from pathlib import Path

from ..devices import parse_device
from .base import Backend, BackendError, TensorSpec
from .onnxruntime import OnnxRuntimeBackend
from .tensorrt import ENGINE_SUFFIXES, TensorRTBackend  # imports TensorRT and CUDA only when activated
from .triton import TritonBackend  # imports tritonclient only when activated

BACKENDS: dict[str, type[Backend]] = {
    OnnxRuntimeBackend.type: OnnxRuntimeBackend,
    TensorRTBackend.type: TensorRTBackend,
    TritonBackend.type: TritonBackend,
}

BACKEND_CHOICES = ("auto", *BACKENDS)


def resolve_backend_type(requested: str, path: Path) -> str:
    """`auto` picks the best backend this box can run for the model file."""
    if requested != "auto":
        return requested
    if Path(path).suffix.lower() in ENGINE_SUFFIXES:
        return TensorRTBackend.type  # a serialized engine: only TensorRT can run it
    return OnnxRuntimeBackend.type


def create_backend(model_id: str, requested: str, path: Path, options: dict, device: str = "auto") -> Backend:
    kind = resolve_backend_type(requested, path)
    cls = BACKENDS[kind]
    validated = cls.options_model.model_validate(options)
    backend = cls(model_id, path, validated)
    backend.device = parse_device(device)
    fallback = getattr(validated, "fallback", None)
    if fallback is not None:  # a remote backend with a local one behind it (fallback.py)
        from .fallback import FallbackBackend

        local = create_backend(model_id, fallback.backend, fallback.path or path, fallback.backend_options,
                               device)
        backend = FallbackBackend(backend, local, fallback)
        backend.device = local.device  # `device:` is where this box runs the model: the local backend's
    return backend


__all__ = ["BACKENDS", "BACKEND_CHOICES", "Backend", "BackendError", "TensorSpec", "create_backend"]
