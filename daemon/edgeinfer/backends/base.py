"""The backend interface: load a model, run it, free it.

Public `activate / infer / deactivate` wrap small `_*_impl` methods so every backend gets the same lifecycle
checks and warm-up; backends are context managers. The pipeline never names a concrete backend.

A backend owns its input stage and buffers (`open_input_stage`): by default the CPU preprocessor writing into
numpy arrays, `buffer_sets` of them; a GPU backend instead takes raw uint8 frames into pinned staging memory and
preprocesses on its own stream. The pipeline fills a buffer set through the stage, `submit`s it, and waits on
the returned handle for the outputs. The outputs may be the backend's own memory, reused by the next run of the
same set: a buffer set is free again only after its outputs have been decoded (Polygraphy's runners state the
same rule).
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

from ..devices import Device
from ..preprocess import PreprocessConfig, Preprocessor, Transform
from ..schema import StrictModel
from .errors import BackendError

log = logging.getLogger(__name__)


class UnsupportedInputs(ValueError):
    """The model has inputs besides the image that this backend's input stage cannot feed (a config error)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]  # None where the model leaves a dimension dynamic
    dtype: np.dtype

    @property
    def dynamic_batch(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] is None


class InferHandle(ABC):
    """An inference in flight; `wait` returns (outputs in `Backend.outputs` order, inference ms). `done`: the
    work ended when `submit` returned (a synchronous backend), so its deadline supervision can end at once."""

    done: bool = False

    @abstractmethod
    def wait(self) -> tuple[list[np.ndarray], float]: ...


class CompletedInference(InferHandle):
    """A synchronous backend's result: already done when `submit` returns."""

    __slots__ = ("outputs", "ms")
    done = True

    def __init__(self, outputs: list[np.ndarray], ms: float):
        self.outputs = outputs
        self.ms = ms

    def wait(self) -> tuple[list[np.ndarray], float]:
        return self.outputs, self.ms


class InputStage(ABC):
    """Frames -> one buffer set of the backend's input. `write` is called from the pipeline's prepare thread
    for a set that is not in flight; it returns how the image was mapped (to map boxes back)."""

    sets: int
    batch: int  # images per buffer set
    fixed_batch: bool  # the model's batch dimension is fixed: every run feeds `batch` images
    extra_feeds: Callable[[int], dict[str, np.ndarray]] | None = None  # batch size -> the non-image inputs
    # a stage that writes into host arrays can feed inputs besides the image (size inputs); a device stage
    # binds the image buffer only
    feeds_extra_inputs: bool = False
    # the CUDA device whose memory the stage reads in place (a frame's `device` image on it is not downloaded);
    # None: the stage reads host arrays only
    device_index: int | None = None

    @abstractmethod
    def write(self, set_index: int, item: int, image: np.ndarray) -> Transform: ...

    def feeds(self, set_index: int, n: int) -> dict[str, np.ndarray]:
        """Every input of one run as host arrays, for a backend that takes them (`Backend.submit`'s default)."""
        raise NotImplementedError(f"{type(self).__name__} keeps its buffers on the device: its backend submits them")

    def close(self) -> None:
        pass


class CpuInputStage(InputStage):
    """The CPU preprocessor (OpenCV/numpy) into `sets` preallocated numpy batches."""

    feeds_extra_inputs = True

    def __init__(self, config: PreprocessConfig, spec: TensorSpec, batch: int, fixed_batch: bool, sets: int):
        self.sets, self.batch, self.fixed_batch = sets, batch, fixed_batch
        self.input_name = spec.name
        shape = (batch, *spec.shape[1:])  # the Preprocessor checks the rest against the config
        self.preprocessors = [Preprocessor(config, shape, spec.dtype) for _ in range(sets)]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocessors[0].input_size

    def write(self, set_index: int, item: int, image: np.ndarray) -> Transform:
        return self.preprocessors[set_index].write(item, image)

    def feed(self, set_index: int, n: int) -> np.ndarray:
        return self.preprocessors[set_index].batch(self.batch if self.fixed_batch else n)

    def feeds(self, set_index: int, n: int) -> dict[str, np.ndarray]:
        """Every input of one run: the image batch, plus the constant size inputs some models take."""
        image = self.feed(set_index, n)
        if self.extra_feeds is None:
            return {self.input_name: image}
        return {self.input_name: image, **self.extra_feeds(image.shape[0])}


class Backend(ABC):
    type: ClassVar[str]
    options_model: ClassVar[type[StrictModel]]
    #: input buffer sets the pipeline cycles through: one filling, one in flight (a GPU backend may want a third
    #: so that the upload of frame n+1 overlaps the compute of frame n while frame n-1 is decoded)
    buffer_sets: ClassVar[int] = 2
    remote: ClassVar[bool] = False  # runs on another machine (cannot be a local fallback)
    # Set by the model worker: where a backend reports runtime faults it handles itself (a fallback switch)
    on_fault: Callable[[str], None] | None = None

    def __init__(self, model_id: str, path: Path, options: StrictModel):
        self.model_id = model_id
        self.path = Path(path)
        self.options = options
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.metadata: dict[str, str] = {}  # what the exporter wrote into the model (ONNX metadata_props)
        self.is_active = False
        self.warmup_ms: float | None = None
        self.device = Device("auto")  # the model's `device:`; set by create_backend
        self.input_stage: InputStage | None = None
        self.image_input: TensorSpec | None = None  # set by open_input_stage when the model fitting picks it

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

    def preprocess_config(self, config: PreprocessConfig) -> PreprocessConfig:
        """The preprocessing done here for the model's `preprocess` config (after activate): the same, unless
        the backend leaves part of it to someone else (a Triton server that preprocesses: `send: uint8`)."""
        return config

    def open_input_stage(self, config: PreprocessConfig, batch: int, fixed_batch: bool,
                         image: TensorSpec | None = None,
                         extra_feeds: Callable[[int], dict[str, np.ndarray]] | None = None) -> InputStage:
        """Create the input stage and its buffers for `batch` images per set (after activate). Raises
        ValueError when the preprocessing config does not fit the model's input.

        `image`: the image input when the model has more than one (or with open height/width filled in);
        `extra_feeds`: batch size -> the other inputs' arrays (e.g. `orig_target_sizes`), fed with each batch.
        """
        if self.input_stage is not None:
            self.input_stage.close()
        self.image_input = image
        self.input_stage = self._open_input_stage_impl(config, batch, fixed_batch)
        if extra_feeds is not None:
            if not self.input_stage.feeds_extra_inputs:
                self.input_stage.close()
                self.input_stage = None
                raise UnsupportedInputs(f"the {self.type} backend feeds the image input only; models with a "
                                        "second input (such as orig_target_sizes) run on onnxruntime")
            self.input_stage.extra_feeds = extra_feeds
        return self.input_stage

    def _open_input_stage_impl(self, config: PreprocessConfig, batch: int, fixed_batch: bool) -> InputStage:
        return CpuInputStage(config, self.image_input or self.inputs[0], batch, fixed_batch, self.buffer_sets)

    def submit(self, set_index: int, n: int) -> InferHandle:
        """Run the first n images of a filled buffer set. Synchronous by default; a GPU backend enqueues the
        work on its stream and returns at once."""
        if not self.is_active:
            raise BackendError(f"model '{self.model_id}': submit() before activate()")
        stage = self.input_stage
        if stage is None:
            raise BackendError(f"model '{self.model_id}': submit() needs open_input_stage() first")
        t0 = time.perf_counter()
        outputs = self._infer_impl(stage.feeds(set_index, n))
        return CompletedInference(outputs, (time.perf_counter() - t0) * 1e3)

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self._deactivate_impl()  # first: a GPU backend waits for its streams before buffers go
        if self.input_stage is not None:
            self.input_stage.close()
            self.input_stage = None

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

    # -- helpers -----------------------------------------------------------------------------------------
    @property
    def max_batch(self) -> int | None:
        """None when every input's batch dimension is dynamic, else the fixed batch."""
        fixed = [s.shape[0] for s in self.inputs if s.shape and s.shape[0] is not None]
        return min(fixed) if fixed else None

    @property
    def batch_limit(self) -> int | None:
        """The largest batch a dynamic batch dimension accepts (a TensorRT profile's max), None = any."""
        return None

    @staticmethod
    def _zeros(spec: TensorSpec, batch: int) -> np.ndarray:
        shape = tuple(batch if i == 0 and d is None else (d or 1) for i, d in enumerate(spec.shape))
        return np.zeros(shape, dtype=spec.dtype)
