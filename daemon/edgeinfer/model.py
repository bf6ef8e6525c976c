"""A model fitted to its config: backend + input stage + decoder, used alike by `run` and `check`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .backends import Backend, create_backend
from .decoders import DecodeError, Decoder, create_decoder, load_labels

if TYPE_CHECKING:
    from .backends.base import InputStage
    from .config import ModelConfig

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """The pipeline cannot start (model and config disagree, a backend cannot load, ...)."""


class Model:
    """Loaded, warmed up and fitted: the backend is active, its input stage holds the buffer sets for `batch`
    images each, and the decoder fits the model's outputs. `close()` frees everything."""

    def __init__(self, config: ModelConfig, backend: Backend, stage: InputStage, decoder: Decoder, batch: int):
        self.config = config
        self.id = config.id
        self.backend = backend
        self.stage = stage
        self.decoder = decoder
        self.batch = batch

    @classmethod
    def load(cls, config: ModelConfig) -> Model:
        """Raises BackendError (cannot load or run) or PipelineError (the config does not fit the model)."""
        backend = create_backend(config.id, config.backend, config.path, config.backend_options, config.device)
        try:
            backend.activate(warmup_batch=config.max_batch)
            return cls._fit(config, backend)
        except BaseException:
            backend.deactivate()
            raise

    @classmethod
    def _fit(cls, config: ModelConfig, backend: Backend) -> Model:
        if len(backend.inputs) != 1:
            raise PipelineError(f"model '{config.id}': {len(backend.inputs)} inputs; image models take one")
        model_batch = backend.max_batch
        if model_batch is not None and config.max_batch > model_batch:
            raise PipelineError(f"models.{config.id}.max_batch={config.max_batch} but the model's batch "
                                f"dimension is fixed at {model_batch}")
        limit = backend.batch_limit
        if limit is not None and config.max_batch > limit:
            raise PipelineError(f"models.{config.id}.max_batch={config.max_batch} but the engine's optimization "
                                f"profile allows batches up to {limit}")
        batch = model_batch or config.max_batch
        try:
            stage = backend.open_input_stage(config.preprocess, batch, fixed_batch=model_batch is not None)
        except ValueError as exc:  # e.g. preprocess.dtype disagrees with the model's input type
            raise PipelineError(f"models.{config.id}.preprocess does not fit the model: {exc}") from exc
        try:
            labels = load_labels(config.labels) if config.labels else []
        except (OSError, ValueError) as exc:
            raise PipelineError(f"models.{config.id}.labels: {exc}") from exc
        try:
            decoder = create_decoder(config.decoder, labels, [tuple(o.shape) for o in backend.outputs])
        except DecodeError as exc:
            raise PipelineError(f"models.{config.id}.decoder does not fit the model's outputs: {exc}") from exc
        return cls(config, backend, stage, decoder, batch)

    def close(self) -> None:
        self.backend.deactivate()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
