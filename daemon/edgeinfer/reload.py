"""SIGHUP reloads that never stop a running robot, and stop signals that are never lost.

`Reloader` owns the running `Daemon` for the whole process. A SIGHUP only sets an event: the config is read
(a regular file of bounded size, configfile.py), validated and its models loaded and fitted on the reload
thread while the running pipeline goes on. Only a config whose models all load replaces the running pipeline:

    SIGHUP -> [reload thread] read + validate + load models --fails--> log, `reload_failed`, old pipeline goes on
                                        | ok
              [main thread]   stop the old pipeline, start the new one with the loaded models
                                        | what only the running pipeline could release fails (a bound port)
                                        +--> log, `reload_failed`, the previous config is started again

Stop signals (SIGTERM, SIGINT) set a flag that the main loop reads before every step, so a SIGTERM that
arrives in the middle of a reload is never cleared or lost: the daemon stops within `STOP_WITHIN_S`.
A reload thread still loading models then is abandoned (it is a daemon thread; what it loads is closed).

Across reloads the process keeps: `--max-frames` (counted over the process), the frame numbering and file
position of finite sources (a video resumes where it was), and the frame accounts (in = out + dropped +
in flight; frames in flight at a switch are dropped with the reason "reload").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import accounting
from .backends import BackendError
from .engines.chain import ModelChain
from .lazy import MissingDependency
from .model import PipelineError
from .outputs import OutputError
from .preflight import load_config
from .problems import ConfigError
from .service import Daemon
from .sources import SourceError

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("edgeinfer")

# What the daemon promises for SIGTERM: the pipeline's join timeout (2 s) + outputs' close (<= 1 s) + margin.
STOP_WITHIN_S = 5.0
# What a failed start raises (besides PipelineError, a config that does not fit the model)
START_ERRORS = (BackendError, SourceError, OutputError, MissingDependency)


class ReloadFailed(Exception):
    """A reload that cannot go ahead; the message says why in one line."""


@dataclass
class PreparedConfig:
    """A validated config whose models are loaded, fitted and warmed up, ready to replace the running one."""

    config: Config
    models: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # model id -> (ModelChain, Model)

    def discard(self) -> None:
        for chain, model in self.models.values():
            chain.close()
            model.close()
        self.models.clear()


def prepare(path: str) -> PreparedConfig:
    """Everything of a reload that can fail without touching the running pipeline: read and validate the
    config (files, output folders) and load every model. Raises ReloadFailed."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise ReloadFailed(f"{path} is not valid: " + "; ".join(str(p) for p in exc.problems)) from exc
    prepared = PreparedConfig(config)
    try:
        for model_config in config.models:
            chain = ModelChain(model_config)
            try:
                model = chain.load()
            except BaseException:
                chain.close()
                raise
            prepared.models[model_config.id] = (chain, model)
            for warning in model.fit_warnings:
                log.warning("reload: models.%s.%s", model_config.id, warning)
    except (PipelineError, *START_ERRORS) as exc:
        prepared.discard()
        raise ReloadFailed(f"{path}: {exc}") from exc
    except BaseException:
        prepared.discard()
        raise
    return prepared


# glibc's mallopt parameter for the number of malloc arenas (malloc.h: M_ARENA_MAX)
M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def _glibc_function(name: str) -> Any:
    """A glibc function by name, or None (musl, macOS: no arenas to tune)."""
    path = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(path), name, None) if path else None
    except OSError:
        return None


def limit_malloc_arenas(environ: dict[str, str] | None = None) -> None:
    """Cap glibc's malloc arenas at MALLOC_ARENAS (before the pipeline's threads start). Each new pipeline's
    threads (one per source, three per model, supervisor) took fresh per-thread arenas, and the model memory
    freed by the replaced pipeline stayed fragmented in the old ones: RSS grew by ~6-8 MB per reload (220 ->
    475 MB over 31 reloads of the demo model here), with no Python object left behind. With two arenas it
    is flat. MALLOC_ARENA_MAX in the environment (the operator's choice) is left alone."""
    if "MALLOC_ARENA_MAX" in (os.environ if environ is None else environ):
        return
    mallopt = _glibc_function("mallopt")
    if mallopt is not None:
        mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def return_freed_memory() -> None:
    """Collect the replaced pipeline's objects and give the freed memory back to the system (malloc_trim)."""
    gc.collect()
    trim = _glibc_function("malloc_trim")
    if trim is not None:
        trim(0)


DaemonFactory = Callable[..., Daemon]


class Reloader:
    def __init__(self, config_path: str, config: Config, max_frames: int | None = None, notifier: Any = None,
                 make_daemon: DaemonFactory = Daemon, prepare_config: Callable[[str], PreparedConfig] = prepare):
        self.path = config_path
        self.max_frames = max_frames
        self.notifier = notifier
        self._make = make_daemon
        self._prepare = prepare_config
        self.status: dict[str, Any] = {"done": 0, "failed": 0, "last_failure": None}  # into the heartbeat
        self.published_before = 0  # by the pipelines this process ran before the current one
        self.accounts_before: dict[str, dict[str, Any]] = {}
        self.daemon = self._new_daemon(config)
        self._lock = threading.Lock()  # guards self.daemon (replaced by the main thread) and self._ready
        self._stopping = threading.Event()
        self._wanted = threading.Event()
        self._closed = threading.Event()
        self._ready: PreparedConfig | None = None
        self._thread = threading.Thread(target=self._reload_loop, name="reload", daemon=True)
        self.on_failure: list[Callable[[str], None]] = []  # called with the reason of every refused reload

    # -- from signal handlers: set flags only (never read files or take locks that a reload holds) ------
    def request_stop(self) -> None:
        self._stopping.set()
        self.daemon.stop_requested.set()  # a stale daemon at worst: the main loop reads _stopping before each step

    def request_reload(self) -> None:
        self._wanted.set()

    def reset(self) -> None:
        self.daemon.supervisor.reset()

    # -- the main thread ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the first daemon (its errors propagate: the CLI maps them to exit codes)."""
        self.daemon.start()
        self._thread.start()

    def run(self) -> tuple[str, int]:
        """Until a stop signal, the end of the input, --max-frames or a failure; reloads in between."""
        while True:
            with self._lock:
                daemon = self.daemon
                if self._ready is not None or self._stopping.is_set():
                    daemon.stop_requested.set()  # a reload or a stop that came while the last step ran
            reason, code = daemon.run()
            if self._stopping.is_set():
                return ("stopped", 0) if reason == "stopped" else (reason, code)
            with self._lock:
                prepared, self._ready = self._ready, None
            if reason == "stopped" and prepared is not None and daemon.pipeline.gate.done.is_set():
                reason = "max-frames"  # reached as the reload woke the loop: the run is over, not reloaded
            if reason != "stopped" or prepared is None:
                if prepared is not None:
                    prepared.discard()
                return reason, code
            self._switch(prepared)

    def close(self) -> None:
        """After run(): stop the current daemon (final) and drop a reload that was still being prepared."""
        self._closed.set()
        self._wanted.set()
        with self._lock:
            prepared, self._ready = self._ready, None
        if prepared is not None:
            prepared.discard()
        self.daemon.stop()

    def accounts(self) -> dict[str, dict[str, Any]]:
        """The process's frame accounts so far (the current pipeline's live ones added)."""
        return accounting.add(self.accounts_before, accounting.frame_accounts(self.daemon.pipeline))

    def published(self) -> int:
        return self.published_before + self.daemon.pipeline.gate.count

    # -- the switch (main thread) ---------------------------------------------------------------------------
    def _switch(self, prepared: PreparedConfig) -> None:
        old = self.daemon
        old.stop(final=False)
        resume = old.pipeline.resume_points()
        self.published_before += old.pipeline.gate.count
        self.accounts_before = accounting.add(
            self.accounts_before, accounting.settle(accounting.frame_accounts(old.pipeline), accounting.RELOAD))
        log.info("reloading %s: the new config's models are loaded; restarting the pipeline (%d frame(s) "
                 "published so far)", self.path, self.published_before)
        new = self._new_daemon(prepared.config, preloaded=prepared.models, resume=resume)
        try:
            self._start(new)
        except (PipelineError, *START_ERRORS) as exc:
            # what only the running pipeline could release (a bound port, a device) was taken by something
            # else meanwhile: start the previous config again
            new.stop(final=False)
            log.error("reload: the new pipeline cannot start: %s; starting the previous config again", exc)
            new = self._new_daemon(old.config, resume=resume)
            self._start(new)  # it ran until a moment ago; if even it cannot start, the CLI exits 1
            self._failed(f"the new pipeline cannot start: {exc}; the previous config runs again", new)
        else:
            self.status["done"] += 1
            log.info("reloaded %s: running %d source(s), %d model(s)", self.path, len(new.pipeline.sources),
                     len(new.pipeline.workers))
        with self._lock:
            self.daemon = new
        del old
        return_freed_memory()

    def _start(self, daemon: Daemon) -> None:
        daemon.start()
        if self._stopping.is_set():
            daemon.stop_requested.set()

    def _new_daemon(self, config: Config, **kwargs: Any) -> Daemon:
        remaining = None if self.max_frames is None else max(0, self.max_frames - self.published_before)
        daemon = self._make(config, max_frames=remaining, notifier=self.notifier, **kwargs)
        daemon.reloads = self.status
        return daemon

    # -- the reload thread ----------------------------------------------------------------------------------
    def _reload_loop(self) -> None:
        while True:
            self._wanted.wait()
            if self._closed.is_set():
                return
            self._wanted.clear()
            log.info("SIGHUP received: reloading %s (the running pipeline goes on while the new one loads)",
                     self.path)
            started = time.monotonic()
            try:
                prepared = self._prepare(self.path)
            except ReloadFailed as exc:
                self._failed(str(exc), self.daemon)
                continue
            except Exception as exc:  # a bug must not end the reload thread: later SIGHUPs still work
                log.exception("reload: preparing %s failed unexpectedly", self.path)
                self._failed(f"{type(exc).__name__}: {exc}", self.daemon)
                continue
            log.info("reload: %s validated and %d model(s) loaded in %.1f s", self.path, len(prepared.models),
                     time.monotonic() - started)
            with self._lock:
                if self._closed.is_set():
                    stale = prepared
                else:
                    stale, self._ready = self._ready, prepared
                    self.daemon.stop_requested.set()  # wake the main thread for the switch
            if stale is not None:
                stale.discard()

    def _failed(self, reason: str, daemon: Daemon) -> None:
        self.status["failed"] += 1
        self.status["last_failure"] = reason
        log.error("reload refused (reload_failed), the running pipeline goes on: %s", reason)
        event = {"type": "reload_failed", "stamp": round(time.time(), 6), "config": self.path, "reason": reason}
        for output in list(daemon.pipeline.outputs):
            try:
                output.event(event)
            except Exception as exc:  # an output that cannot take it is that output's problem
                log.warning("output '%s': cannot publish the reload_failed event: %s", output.id, exc)
        for listener in self.on_failure:
            listener(reason)
