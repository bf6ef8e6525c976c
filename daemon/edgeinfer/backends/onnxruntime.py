"""ONNX Runtime backend: the embedded default that runs anywhere (CPU), with CUDA/TensorRT providers when
the installed onnxruntime has them."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..lazy import lazy_import
from .base import Backend, BackendError, TensorSpec
from .schema import OnnxRuntimeOptions

log = logging.getLogger(__name__)

# best first; `providers: null` picks the available ones in this order
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}




def _load_ort():
    return lazy_import("onnxruntime", "Install it with: pip install onnxruntime (or onnxruntime-gpu).")


class OnnxRuntimeBackend(Backend):
    type = "onnxruntime"
    options_model = OnnxRuntimeOptions
    options: OnnxRuntimeOptions

    def _activate_impl(self) -> None:
        ort = _load_ort()
        if not self.path.is_file():
            raise BackendError(f"model '{self.model_id}': ONNX file not found: {self.path}")
        available = ort.get_available_providers()
        if self.options.providers:
            wanted = list(self.options.providers)
        elif self.device.processor == "cpu":
            wanted = ["CPUExecutionProvider"]
        elif self.device.processor == "gpu":  # a GPU was asked for: no silent CPU fallback
            wanted = [p for p in PREFERRED_PROVIDERS[:2] if p in available][:1] or ["CUDAExecutionProvider"]
        else:
            wanted = [p for p in PREFERRED_PROVIDERS if p in available]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendError(
                f"model '{self.model_id}': execution provider(s) {', '.join(missing)} not available in this "
                f"onnxruntime; available: {', '.join(available)}"
            )
        so = ort.SessionOptions()
        so.log_severity_level = 2 if self.options.log_warnings else 3  # 3: errors only
        if self.options.intra_op_threads:
            so.intra_op_num_threads = self.options.intra_op_threads
        if self.options.inter_op_threads:
            so.inter_op_num_threads = self.options.inter_op_threads
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.options.graph_optimization]
        providers: list = list(wanted)
        if self.device.processor == "gpu":  # pin the CUDA/TensorRT providers to the configured device
            providers = [(p, {"device_id": self.device.index}) if p != "CPUExecutionProvider" else p
                         for p in wanted]
        try:
            self._session = ort.InferenceSession(os.fspath(self.path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise BackendError(f"model '{self.model_id}': ONNX Runtime cannot load {self.path}: {exc}") from exc
        self.inputs = [self._spec(i) for i in self._session.get_inputs()]
        self.outputs = [self._spec(o) for o in self._session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(self._output_names, feeds)

    def _deactivate_impl(self) -> None:
        self._session = None

    def describe(self) -> str:
        return f"onnxruntime[{','.join(self._session.get_providers())}]"

    @staticmethod
    def _spec(node) -> TensorSpec:
        dtype = _ORT_TYPES.get(node.type)
        if dtype is None:
            raise BackendError(f"tensor '{node.name}' has unsupported type {node.type}")
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in node.shape)
        return TensorSpec(node.name, shape, np.dtype(dtype))
