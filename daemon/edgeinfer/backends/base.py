"""The backend interface: load a model, run it, free it.

Public `activate / infer / deactivate` wrap small `_*_impl` methods so every backend gets the same lifecycle
checks and warm-up; backends are context managers. The pipeline never names a concrete backend.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..schema import StrictModel

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """The model cannot be loaded or run; the message says which model and why."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]  # None where the model leaves a dimension dynamic
    dtype: np.dtype

    @property
    def dynamic_batch(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] is None


class Backend(ABC):
    type: ClassVar[str]
    options_model: ClassVar[type[StrictModel]]
    remote: ClassVar[bool] = False  # runs on another machine (cannot be a local fallback)
    # Set by the model worker: where a backend reports runtime faults it handles itself (a fallback switch)
    on_fault: Callable[[str], None] | None = None

    def __init__(self, model_id: str, path: Path, options: StrictModel):
        self.model_id = model_id
        self.path = Path(path)
        self.options = options
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.is_active = False
        self.warmup_ms: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def activate(self, warmup_batch: int = 1) -> None:
        if self.is_active:
            raise BackendError(f"model '{self.model_id}': backend already active")
        self._activate_impl()
        self.is_active = True
        # Warm-up inside activation: the first run allocates arenas and picks kernels, and readiness
        # (systemd READY=1) must not be announced before the model answers at its normal speed.
        t0 = time.perf_counter()
        self.infer({spec.name: self._zeros(spec, warmup_batch) for spec in self.inputs})
        self.warmup_ms = (time.perf_counter() - t0) * 1e3
        log.info("model '%s' on %s ready (warm-up %.1f ms)", self.model_id, self.describe(), self.warmup_ms)

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; returns the outputs in `self.outputs` order."""
        if not self.is_active:
            raise BackendError(f"model '{self.model_id}': infer() before activate()")
        return self._infer_impl(feeds)

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self._deactivate_impl()

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    # -- what a backend implements -----------------------------------------------------------------------
    @abstractmethod
    def _activate_impl(self) -> None:
        """Load the model and fill self.inputs / self.outputs."""

    @abstractmethod
    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    @abstractmethod
    def _deactivate_impl(self) -> None: ...

    def describe(self) -> str:
        return self.type

    def status(self) -> dict[str, Any] | None:
        """State worth a heartbeat (e.g. which link serves); None when there is nothing to say."""
        return None

    @classmethod
    def options_for_model(cls, options: dict[str, Any], budget_ms: float) -> dict[str, Any]:
        """The backend options as given, completed from the model's settings (a remote deadline from its
        budget). Called on the raw YAML, so `options` may be anything."""
        return options

    # -- helpers -----------------------------------------------------------------------------------------
    @property
    def max_batch(self) -> int | None:
        """None when every input's batch dimension is dynamic, else the fixed batch."""
        fixed = [s.shape[0] for s in self.inputs if s.shape and s.shape[0] is not None]
        return min(fixed) if fixed else None

    @staticmethod
    def _zeros(spec: TensorSpec, batch: int) -> np.ndarray:
        shape = tuple(batch if i == 0 and d is None else (d or 1) for i, d in enumerate(spec.shape))
        return np.zeros(shape, dtype=spec.dtype)
