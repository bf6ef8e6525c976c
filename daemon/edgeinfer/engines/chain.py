"""A model's fallback chain: `path` first, then `fallback[0]`, `fallback[1]`, ... (other engines, an engine
rebuilt from the ONNX, ONNX Runtime).

At start the first link that loads serves. A link with `build_from` whose engine is missing or cannot run here
is rebuilt in a background thread while the next link serves; when the rebuilt engine loads, it is handed to the
model's worker, which swaps it in between batches (`ModelWorker.swap`). Every step is logged, and the heartbeat
carries `describe()`: which link serves and why the ones before it do not. Never a silent None: when no link
loads, the error lists every link and its reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..backends import BackendError, resolve_backend_type
from ..lazy import MissingDependency
from ..model import Model, PipelineError
from .build import build_engine

if TYPE_CHECKING:
    from ..config import FallbackLink, ModelConfig

log = logging.getLogger(__name__)


def rebuild_tensorrt(link: FallbackLink) -> None:
    """Build the link's engine from its ONNX with TensorRT's builder (progress goes to the log's stream)."""
    result = build_engine(link.build_from, link.path, link.build)
    log.info("rebuilt %s from %s in %.1f s", link.path, link.build_from, result.seconds)


# backend type of the link -> function that (re)creates `link.path` from `link.build_from`
BUILDERS: dict[str, Callable[[Any], None]] = {"tensorrt": rebuild_tensorrt}


class ChainError(BackendError):
    """No link of the chain loads; the message lists each link and why."""


class ModelChain:
    def __init__(self, config: ModelConfig, builders: dict[str, Callable[[Any], None]] | None = None):
        self.config = config
        self.id = config.id
        self.links: list[FallbackLink] = config.links()
        self.builders = BUILDERS if builders is None else builders
        self.status: list[str] = ["untried"] * len(self.links)
        self.serving: int | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._threads: dict[int, threading.Thread] = {}
        self._on_swap: Callable[[Model], None] | None = None
        self._pending: Model | None = None

    # -- the chain ------------------------------------------------------------------------------------------
    def label(self, index: int) -> str:
        link = self.links[index]
        kind = resolve_backend_type(link.backend, link.path)
        return f"link {index} ({link.path.name}, {kind}{'' if link.device == 'auto' else ' on ' + link.device})"

    def link_config(self, index: int) -> ModelConfig:
        link = self.links[index]
        return self.config.model_copy(update={"path": link.path, "backend": link.backend, "device": link.device,
                                              "backend_options": link.backend_options, "fallback": []})

    def load(self, rebuild: bool = True) -> Model:
        """The first link that loads. Links with `build_from` that cannot load are rebuilt in the background
        (when `rebuild`); when nothing else loads, the rebuilds are waited for."""
        if len(self.links) == 1:  # no chain: the model's own errors, unchanged
            model = Model.load(self.link_config(0))
            self.status[0], self.serving = "serving", 0
            return model
        config_errors = []
        for index in range(len(self.links)):
            model, reason, config_error = self._try(index)
            if model is not None:
                self._serve(index, model, "serving")
                return model
            if config_error:
                config_errors.append(index)
            if rebuild and self.links[index].build_from is not None:
                self._start_rebuild(index)
        waiting = [i for i, t in self._threads.items() if t.is_alive()]
        for index in waiting:
            log.warning("model '%s': no link loads; waiting for the rebuild of %s", self.id, self.label(index))
            self._threads[index].join()
            if self.serving is not None:  # the rebuild loaded and serves
                with self._lock:
                    model, self._pending = self._pending, None
                if model is not None:
                    return model
        reasons = "; ".join(f"{self.label(i)}: {self.status[i]}" for i in range(len(self.links)))
        error = PipelineError if config_errors and len(config_errors) == len(self.links) else ChainError
        raise error(f"model '{self.id}': no link of its fallback chain loads: {reasons}")

    def _try(self, index: int) -> tuple[Model | None, str, bool]:
        config = self.link_config(index)
        if not config.path.is_file():
            reason = f"file not found: {config.path}"
            self.status[index] = reason
            log.warning("model '%s': %s cannot load: %s", self.id, self.label(index), reason)
            return None, reason, False
        try:
            return Model.load(config), "", False
        except (BackendError, PipelineError, MissingDependency) as exc:
            reason, config_error = str(exc), isinstance(exc, PipelineError)
        except Exception as exc:  # a backend bug must not stop the chain either: name it and go on
            reason, config_error = f"{type(exc).__name__}: {exc}", False
        self.status[index] = reason
        log.warning("model '%s': %s cannot load: %s", self.id, self.label(index), reason)
        return None, reason, config_error

    def _serve(self, index: int, model: Model, status: str) -> None:
        self.serving = index
        self.status[index] = status
        if index == 0:
            log.info("model '%s': serving on %s", self.id, self.label(index))
            return
        before = "; ".join(f"{self.label(i)}: {self.status[i]}" for i in range(index))
        log.warning("model '%s': serving on %s: %s (before it: %s)", self.id, self.label(index),
                    model.backend.describe(), before)

    # -- background rebuilds -------------------------------------------------------------------------------
    def _start_rebuild(self, index: int) -> None:
        if index in self._threads:
            return
        link = self.links[index]
        kind = resolve_backend_type(link.backend, link.path)
        builder = self.builders.get(kind)
        if builder is None:
            self.status[index] += f"; no builder for backend {kind} (builders: {', '.join(self.builders)})"
            return
        self.status[index] = f"rebuilding from {link.build_from.name} (was: {self.status[index]})"
        log.warning("model '%s': rebuilding %s from %s in the background", self.id, self.label(index),
                    link.build_from)
        thread = threading.Thread(target=self._rebuild, args=(index, builder), name=f"rebuild:{self.id}:{index}",
                                  daemon=True)
        self._threads[index] = thread
        thread.start()

    def _rebuild(self, index: int, builder: Callable[[Any], None]) -> None:
        try:
            builder(self.links[index])
        except Exception as exc:  # MissingDependency, BuildError, a full disk: the chain keeps serving
            self.status[index] = f"rebuild failed: {exc}"
            log.error("model '%s': rebuild of %s failed: %s", self.id, self.label(index), exc)
            return
        if self._closed:
            return
        model, reason, _ = self._try(index)
        if model is None:
            self.status[index] = f"rebuilt, but cannot load: {reason}"
            log.error("model '%s': rebuilt %s cannot load: %s", self.id, self.label(index), reason)
            return
        with self._lock:
            better_serving = self.serving is not None and self.serving < index
            if self._closed or better_serving:
                deliver = None
            else:
                self._serve(index, model, "serving (rebuilt)")
                deliver = self._on_swap
                if deliver is None:
                    self._pending = model  # the worker does not exist yet: handed over by attach()
        if self._closed or better_serving:
            model.close()
            return
        if deliver is not None:
            deliver(model)

    def attach(self, on_swap: Callable[[Model], None]) -> None:
        """The worker's swap function; a model rebuilt before the worker existed is handed over now."""
        with self._lock:
            self._on_swap = on_swap
            pending, self._pending = self._pending, None
        if pending is not None:
            on_swap(pending)

    def rebuilding(self) -> bool:
        return any(t.is_alive() for t in self._threads.values())

    def wait_rebuilds(self, timeout: float | None = None) -> None:
        for thread in list(self._threads.values()):
            thread.join(timeout)

    def close(self) -> None:
        """Builds cannot be interrupted; their result is dropped (and closed) when they end after this."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.close()

    def describe(self) -> dict[str, Any]:
        """For the heartbeat: which link serves, and the state of every link."""
        serving = self.serving
        return {
            "link": serving,
            "path": None if serving is None else self.links[serving].path.name,
            "backend": None if serving is None else resolve_backend_type(self.links[serving].backend,
                                                                          self.links[serving].path),
            # statuses shortened: the heartbeat goes out 20 times a second; the log has them whole
            "links": [{"path": link.path.name, "status": status if len(status) <= 200 else status[:197] + "..."}
                      for link, status in zip(self.links, self.status)],
        }
