"""A model fitted to its config: backend + input stage + decoder, used alike by `run` and `check`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .backends import create_backend
from .backends.base import Backend, UnsupportedInputs
from .decoders import DecodeError, Decoder, check_decoder_fit
from .fitting import FitError, fit_model

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
        self.notes: list[str] = []  # what was read from the model file and which decoder layout, and why
        self.fit_warnings: list[str] = []  # "key: message" from the fit check (e.g. a short labels file)

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
        model_batch = backend.max_batch
        if model_batch is not None and config.max_batch > model_batch:
            raise PipelineError(f"models.{config.id}.max_batch={config.max_batch} but the model's batch "
                                f"dimension is fixed at {model_batch}")
        limit = backend.batch_limit
        if limit is not None and config.max_batch > limit:
            raise PipelineError(f"models.{config.id}.max_batch={config.max_batch} but the engine's optimization "
                                f"profile allows batches up to {limit}")
        batch = model_batch or config.max_batch
        preprocess = backend.preprocess_config(config.preprocess)
        if preprocess is not config.preprocess:
            log.info("model '%s': %s preprocesses on the server; here only %s to %s, as BGR uint8", config.id,
                     backend.describe(), config.preprocess.resize, "the network's input size")
            config = config.model_copy(update={"preprocess": preprocess})
        try:  # image input, size inputs, names, input size and decoder: from the config, else the model file
            fitting = fit_model(config, backend.inputs, backend.outputs, backend.metadata, batch)
        except FitError as exc:
            raise PipelineError(f"models.{config.id}.{exc}") from exc
        try:
            stage = backend.open_input_stage(config.preprocess, batch, fixed_batch=model_batch is not None,
                                             image=fitting.stage_image_spec(),
                                             extra_feeds=fitting.size_feeds())
        except UnsupportedInputs as exc:
            raise PipelineError(f"models.{config.id}.backend: {exc}") from exc
        except ValueError as exc:  # e.g. preprocess.dtype disagrees with the model's input type
            raise PipelineError(f"models.{config.id}.preprocess does not fit the model: {exc}") from exc
        for note in fitting.notes:
            log.info("model '%s': %s", config.id, note)
        try:
            # one inference on a test image: refuses outputs the layout cannot have (decoders/fit.py)
            fit_warnings = check_decoder_fit(backend, fitting.decoder, stage, config.labels)
        except DecodeError as exc:
            raise PipelineError(f"models.{config.id}.decoder does not fit the model's outputs: {exc}") from exc
        model = cls(config, backend, stage, fitting.decoder, batch)
        model.notes = fitting.notes
        model.fit_warnings = fit_warnings
        return model

    def close(self) -> None:
        self.backend.deactivate()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
