"""A remote backend with a local one behind it: perception must not stop because the network did.

Both are activated up front (the local one warmed up, so taking over costs no load time). A frame whose
request fails — deadline missed, connection lost, server or model not ready — is run on the local backend in
the same `infer` call, so no frame is lost; from then on the local backend serves. A background prober (never
the hot path) checks the server every `probe_interval_ms`; after `recover_probes` consecutive healthy probes
(live, ready, model ready and one inference within the deadline) the server serves again. The consecutive
count is the hysteresis: a server that answers one probe in three does not get frames back.

Each switch to local is logged (rate-limited) and reported once as a fault to the watchdog through `on_fault`;
`status()` says which link serves, for the pipeline's stats and the heartbeat.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ..logutil import RateLimitedLog
from .base import Backend, BackendError, TensorSpec
from .schema import FallbackOptions

log = logging.getLogger(__name__)


class FallbackBackend(Backend):
    type = "fallback"  # made by create_backend from a remote backend's `fallback:` options; not a config key
    options_model = FallbackOptions
    options: FallbackOptions

    def __init__(self, primary: Backend, local: Backend, options: FallbackOptions):
        super().__init__(primary.model_id, primary.path, options)
        self.primary = primary
        self.local = local
        self._serving_primary = False
        self._primary_fits = False  # primary activated and its tensors match the local model's
        self._unfit: str | None = None  # the server's model can never stand in for the local one
        self._healthy = 0
        self._warmup_batch = 1
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        self._rlog = RateLimitedLog(log)
        self._lock = threading.Lock()  # counters are read by the heartbeat thread
        self.switches_to_local = 0
        self.switches_to_primary = 0
        self.local_frames = 0
        self.primary_frames = 0
        self.last_error: str | None = None
        self._descriptions = ("", "")

    # -- lifecycle ---------------------------------------------------------------------------------------
    def activate(self, warmup_batch: int = 1) -> None:
        self._warmup_batch = warmup_batch
        super().activate(warmup_batch)

    def _activate_impl(self) -> None:
        self.local.activate(self._warmup_batch)
        self.inputs, self.outputs = list(self.local.inputs), list(self.local.outputs)
        try:
            self._activate_primary()
        except BackendError as exc:
            if self._unfit is not None:  # a reachable server with another model: a config mistake, say it now
                self.local.deactivate()
                raise
            # the server may come up after the robot: start on the local model and keep trying in the background
            self.last_error = str(exc)
            log.warning("%s; serving from the local %s until the server is healthy", exc, self.local.describe())
        self._descriptions = (self.primary.describe(), self.local.describe())
        self._stop.clear()
        self._prober = threading.Thread(target=self._probe_loop, name=f"probe:{self.model_id}", daemon=True)
        self._prober.start()

    def _activate_primary(self, serve: bool = True) -> None:
        try:
            self.primary.activate(self._warmup_batch)
            self.inputs, self.outputs = _fit(self.primary, self.local)
        except BackendError as exc:
            self.primary.deactivate()
            if self.primary.inputs and "does not match" in str(exc):
                self._unfit = str(exc)
            raise
        self._primary_input = self.primary.inputs[0].name
        self._primary_fits = True
        self._serving_primary = serve

    def _deactivate_impl(self) -> None:
        self._stop.set()
        if self._prober is not None:
            self._prober.join(timeout=5.0)
        self.primary.deactivate()
        self.local.deactivate()

    def describe(self) -> str:
        primary, local = self._descriptions
        return f"{primary or self.primary.type} with fallback to {local or self.local.type}"

    # -- hot path ----------------------------------------------------------------------------------------
    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._serving_primary:
            try:
                out = self.primary.infer(self._for_primary(feeds))
                with self._lock:
                    self.primary_frames += 1
                return out
            except BackendError as exc:
                self._to_local(str(exc))
        out = self.local.infer(feeds)
        with self._lock:
            self.local_frames += 1
        return out

    def _for_primary(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(feeds) == 1:
            (array,) = feeds.values()
            return {self._primary_input: array}
        return feeds

    def _to_local(self, reason: str) -> None:
        with self._lock:
            self._serving_primary = False
            self._healthy = 0
            self.switches_to_local += 1
            self.last_error = reason
        self._rlog.warning("switch", "%s; serving from the local %s until %d consecutive health probes pass",
                           reason, self._descriptions[1], self.options.recover_probes)
        if self.on_fault is not None:
            self.on_fault(f"remote backend failed, local fallback serving: {reason}")

    # -- background prober ---------------------------------------------------------------------------------
    def _probe_loop(self) -> None:
        interval = self.options.probe_interval_ms / 1e3
        while not self._stop.wait(interval):
            if self._serving_primary or self._unfit is not None:
                continue
            try:
                self._probe_once()
            except Exception:  # the prober must outlive any surprise; the hot path does not depend on it
                log.exception("model '%s': health probe crashed", self.model_id)

    def _probe_once(self) -> None:
        if not self._primary_fits:
            try:
                self._activate_primary_quietly()
            except BackendError as exc:
                self.last_error = str(exc)
                if self._unfit is not None:
                    log.error("%s; staying on the local backend", exc)
                    if self.on_fault is not None:
                        self.on_fault(str(exc))
            return
        reason = getattr(self.primary, "probe", lambda: None)()
        with self._lock:
            if reason is not None:
                self._healthy = 0
                self.last_error = reason
        if reason is not None:  # why the server is not taken back yet, at a bounded rate
            self._rlog.log(logging.INFO, "probe", "model '%s': health probe of %s failed: %s; the local %s serves",
                           self.model_id, self._descriptions[0], reason, self._descriptions[1])
            return
        with self._lock:
            self._healthy += 1
            if self._healthy < self.options.recover_probes:
                return
            self._serving_primary = True
            self.switches_to_primary += 1
        log.info("model '%s': %s passed %d consecutive health probes; it serves again", self.model_id,
                 self._descriptions[0], self.options.recover_probes)

    def _activate_primary_quietly(self) -> None:
        """First contact with a server that was down at start: activate, then count it as one healthy probe
        (the switch still waits for the rest)."""
        self._activate_primary(serve=False)
        with self._lock:
            self._healthy = 1
            self._descriptions = (self.primary.describe(), self._descriptions[1])
            if self._healthy >= self.options.recover_probes:
                self._serving_primary = True
                self.switches_to_primary += 1

    # -- reporting ---------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "link": "remote" if self._serving_primary else "local",
                "remote": self._descriptions[0] or self.primary.type,
                "local": self._descriptions[1] or self.local.type,
                "remote_frames": self.primary_frames,
                "local_frames": self.local_frames,
                "switches_to_local": self.switches_to_local,
                "switches_to_remote": self.switches_to_primary,
                "healthy_probes": self._healthy,
                "last_error": self.last_error[:200] if self.last_error else None,
            }

    @property
    def batch_limit(self) -> int | None:
        limits = [b for b in (self.primary.batch_limit, self.local.batch_limit) if b is not None]
        return min(limits) if limits else None

    @property
    def serving(self) -> str:
        return "remote" if self._serving_primary else "local"


def _fit(primary: Backend, local: Backend) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The tensors both backends accept: counts, dtypes and fixed dimensions must agree (None fits anything);
    the result keeps the tighter of each dimension so buffers fit both."""
    where = f"model '{primary.model_id}': the server's model ({primary.describe()}) does not match the local " \
            f"fallback ({local.describe()})"
    merged: list[list[TensorSpec]] = []
    for kind in ("inputs", "outputs"):
        a_list, b_list = getattr(primary, kind), getattr(local, kind)
        if len(a_list) != len(b_list):
            raise BackendError(f"{where}: {len(a_list)} {kind} vs {len(b_list)}")
        specs = []
        for a, b in zip(a_list, b_list):
            if a.dtype != b.dtype or len(a.shape) != len(b.shape) or any(
                    x is not None and y is not None and x != y for x, y in zip(a.shape, b.shape)):
                raise BackendError(f"{where}: {kind[:-1]} '{a.name}' {a.dtype}{list(a.shape)} vs "
                                   f"'{b.name}' {b.dtype}{list(b.shape)}")
            specs.append(TensorSpec(b.name, tuple(x if x is not None else y for x, y in zip(a.shape, b.shape)),
                                    b.dtype))
        merged.append(specs)
    return merged[0], merged[1]
