"""The daemon around the pipeline: watchdog supervisor, heartbeats, safe-stop actions and systemd.

Start-up order matters for systemd: outputs, models (loaded and warmed up) and sources start first, then the
supervisor, and only then READY=1 — so `systemctl start` returns when the daemon can really answer, and the
WatchdogSec= timer (which systemd arms at READY=1) never sees a warm-up.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .accounting import frame_accounts
from .pipeline import Pipeline
from .results import Detections, Missing, Result
from .runtime import CommandRegistry
from .watchdog import GlobalState, Snapshot, Supervisor, SystemdNotifier, build_specs

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0  # how often systemd's STATUS= line (state, fps) is refreshed
EXIT_RUNTIME_FAILURE = 1  # the CLI's exit code for a runtime failure (systemd's Restart=on-failure restarts)


def alive_defaults(config: Config) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """min_fps per source and model, with the default alive check for live sources filled in.

    A live source (camera, stream, endless synthetic) without `min_fps` gets `watchdog.live_source_min_fps`,
    so a camera that never connects (or dies) is EXPIRED and the daemon DEGRADED, never OK. The models that
    read it keep their own checks only: a dead camera is the camera's fault, not the model's, and the daemon
    keeps running and reconnecting instead of stopping. List the source in `watchdog.safety_relevant` to make
    its loss a SAFE_STOP. Files are processed as fast as the model goes: no default for them."""
    default = config.watchdog.live_source_min_fps
    sources: dict[str, float | None] = {}
    for s in config.sources:
        live = not s.finite
        sources[s.id] = s.min_fps if s.min_fps is not None else (default if live else None)
    models = {m.id: m.min_fps for m in config.models}
    return sources, models


class Daemon:
    def __init__(self, config: Config, max_frames: int | None = None, notifier: SystemdNotifier | None = None,
                 preloaded: dict[str, Any] | None = None, resume: dict[str, Any] | None = None):
        self.config = config
        self.notifier = notifier or SystemdNotifier.from_env()
        wd = config.watchdog
        source_fps, model_fps = alive_defaults(config)
        specs = build_specs(
            wd,
            sources=[(s.id, source_fps[s.id]) for s in config.sources],
            models=[(m.id, m.budget_ms, model_fps[m.id]) for m in config.models],
            outputs=[o.id or o.type for o in config.outputs],
        )
        self.supervisor = Supervisor(wd, specs, notifier=self.notifier, on_cycle=[self._on_cycle])
        self.commands = CommandRegistry()  # answered on every control channel the outputs offer
        self.commands.register("reset", self._reset)
        self.commands.register("status", lambda request: {"ok": True, "heartbeat": self.last_heartbeat})
        self.pipeline = Pipeline(config, reporter=self.supervisor, max_frames=max_frames,
                                 detections_valid=lambda: self.supervisor.detections_valid,
                                 commands=self.commands, status=lambda: self.last_heartbeat, preloaded=preloaded,
                                 resume=resume)
        self.reloads: dict[str, Any] | None = None  # set by the Reloader: reload counts for the heartbeat
        self.stop_requested = threading.Event()
        self.last_heartbeat: dict[str, Any] | None = None
        self.clean_stop = True
        self._status_every = max(1, round(STATUS_EVERY_S * 1000 / wd.period_ms))
        self._invalid_marked = False
        # per output: (published, errors) at the last cycle, and since when it has only failed (monotonic)
        self._output_counts: dict[str, tuple[int, int]] = {}
        self._outputs_lock = threading.Lock()  # tracked from the supervisor thread and, at the end, from run()
        self.failing_outputs: dict[str, float] = {}
        self.failure: str | None = None  # why the run must end with a runtime failure (exit 1)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self.notifier.status("starting: loading and warming up models")
        self.pipeline.start()
        self.supervisor.start()
        self.notifier.ready(status=f"running: {len(self.pipeline.workers)} model(s), "
                                   f"{len(self.pipeline.sources)} source(s)")

    def run(self) -> tuple[str, int]:
        """Until stopped, --max-frames, end of input, or a safe stop that asks to exit. Returns
        (reason, exit code)."""
        reason = self.pipeline.wait(self.stop_requested)
        code = self.supervisor.exit_code
        if code is not None:
            return "safe-stop", code
        self._track_outputs(time.monotonic())
        if self.failure is None and self.pipeline.outputs and all(
                o.id in self.failing_outputs for o in self.pipeline.outputs):
            self.failure = "every output failed: " + self._output_failures()
        if reason == "end-of-input":
            # a source that gave up (damaged file, cannot reopen to loop) is a failure, never a clean end
            failed = [s for s in self.pipeline.sources if s.state == "failed"]
            if failed and self.failure is None:
                self.failure = "; ".join(f"source '{s.id}' failed: {s.stats()['last_error']}" for s in failed)
        if self.failure is not None:
            return f"failure: {self.failure}", EXIT_RUNTIME_FAILURE
        return reason, 0

    def stop(self, final: bool = True) -> None:
        """The shutdown sequence. final=False: a reload follows (RELOADING=1 instead of STOPPING=1, and the
        systemd socket stays open for the next daemon)."""
        if final:
            self.notifier.stopping()
        else:
            self.notifier.notify(reloading=1, monotonic_usec=int(time.monotonic() * 1e6))
        self.supervisor.stop()
        self.clean_stop = self.pipeline.stop(timeout_s=2.0, before_close=self._final_heartbeat if final else None)
        if final:
            self.notifier.close()

    def _counts(self) -> dict[str, Any]:
        """The heartbeat's counts (issue 22: counts that never lie)."""
        return {
            "frames": frame_accounts(self.pipeline),  # per model: in = out + dropped (by reason) + in flight
            "bad_frames": {s.id: s.stats()["bad_frames"] for s in self.pipeline.sources},  # skipped, per source
            # per output: lines written and failed writes (a full disk, a reader gone)
            "output_writes": {o.id: {"written": o.published, "errors": o.errors, "last_error": o.last_error}
                              for o in self.pipeline.outputs},
        }

    def _final_heartbeat(self) -> None:
        """The last heartbeat, once every source and worker stopped: its counts are the run's final ones (bad
        frames skipped, frames in/out/dropped, output writes)."""
        if self.last_heartbeat is None:
            return
        body = dict(self.last_heartbeat, stamp=round(time.time(), 6), final=True, **self._counts())
        for output in self.pipeline.outputs:
            try:
                output.heartbeat(body)
            except Exception as exc:  # the run is ending: say it, do not stop the shutdown
                log.warning("output '%s': cannot write the final heartbeat: %s", output.id, exc)

    def _track_outputs(self, now: float) -> None:
        """An output whose writes only fail (errors grow, nothing published) is failing since then."""
        with self._outputs_lock:
            self._track_outputs_locked(now)

    def _track_outputs_locked(self, now: float) -> None:
        for output in self.pipeline.outputs:
            if output.closed_by_peer:  # a reader that went away (`| head`) is a normal end, not a failure
                self.failing_outputs.pop(output.id, None)
                continue
            counts = (output.published, output.errors)
            before = self._output_counts.get(output.id, (0, 0))
            self._output_counts[output.id] = counts
            if counts[0] > before[0]:
                self.failing_outputs.pop(output.id, None)
            elif counts[1] > before[1]:
                self.failing_outputs.setdefault(output.id, now)

    def _output_failures(self) -> str:
        return ", ".join(f"'{o.id}' ({o.errors} failed write(s), last: {o.last_error or '?'})"
                         for o in self.pipeline.outputs if o.id in self.failing_outputs)

    # -- commands (SIGUSR1, the control channels of the outputs) -------------------------------------------
    def _reset(self, request: dict[str, Any]) -> dict[str, Any]:
        self.supervisor.reset()
        return {"ok": True, "reply": "reset requested", "state": self.supervisor.state.value}

    # -- every supervision cycle (on the supervisor thread) ---------------------------------------------
    def _on_cycle(self, snapshot: Snapshot) -> None:
        heartbeat = self.heartbeat(snapshot)
        self.last_heartbeat = heartbeat
        for output in self.pipeline.outputs:
            try:
                output.heartbeat(heartbeat)
                if output.id not in self.failing_outputs:  # one whose writes only fail is not alive
                    self.supervisor.alive(output.id)
            except Exception as exc:  # a broken channel is that output's fault, not the supervisor's
                output.errors += 1
                self.supervisor.fault(output.id, f"heartbeat failed: {exc}")
        safe_stop = snapshot.state is GlobalState.SAFE_STOP
        if safe_stop and not self._invalid_marked and not self.supervisor.detections_valid:
            self._publish_invalid_markers(snapshot)
        self._invalid_marked = safe_stop
        if snapshot.cycle % self._status_every == 0:
            fps = ", ".join(f"{k} {v:.1f} fps" for k, v in heartbeat["fps"].items())
            causes = "" if snapshot.state is GlobalState.OK else f"{self.supervisor.describe_causes(snapshot)}; "
            self.notifier.status(f"{snapshot.state.value}: {causes}{fps}")
        if self.supervisor.exit_code is not None:
            self.stop_requested.set()
        if all(o.closed_by_peer for o in self.pipeline.outputs) and not self.stop_requested.is_set():
            log.info("every output was closed by its reader; stopping")
            self.stop_requested.set()
        now = time.monotonic()
        self._track_outputs(now)
        dead_for = self.config.watchdog.output_alive_s
        outputs = self.pipeline.outputs
        if (outputs and self.failure is None and not all(o.closed_by_peer for o in outputs)
                and all(now - self.failing_outputs.get(o.id, now) >= dead_for for o in outputs)
                and all(o.id in self.failing_outputs for o in outputs)):
            # nobody can hear this daemon any more: say so, and end with a failure so systemd restarts it
            self.failure = f"every output has failed for {dead_for:g} s (watchdog.output_alive_s): " + \
                self._output_failures()
            log.error("%s; stopping", self.failure)
            self.stop_requested.set()

    def heartbeat(self, snapshot: Snapshot) -> dict[str, Any]:
        ages = self.pipeline.frame_ages_ms()
        body = {"type": "heartbeat", "stamp": round(time.time(), 6)}
        body.update(self.supervisor.heartbeat(snapshot))
        body["newest_frame_age_ms"] = min(ages.values()) if ages else None
        body["frame_age_ms"] = ages
        body["fps"] = self.pipeline.fps()
        body["serving"] = self.pipeline.serving()  # which link of each model's fallback chain serves
        if self.failing_outputs:
            body["failing_outputs"] = sorted(self.failing_outputs)
        counters = {p.id: c for p in (*self.pipeline.sources, *self.pipeline.outputs) if (c := p.counters())}
        if counters:  # plugin counters: malformed frames per reason, refused peers, ...
            body["counters"] = counters
        body.update(self._counts())
        if self.reloads is not None:
            body["reloads"] = dict(self.reloads)
        backends = self.pipeline.backend_status()
        if backends:  # only models whose backend has a state to show (e.g. remote with local fallback)
            body["backends"] = backends
        return body

    def _publish_invalid_markers(self, snapshot: Snapshot) -> None:
        """A hung model publishes nothing, so its consumers get one explicit invalid record per source at the
        moment of the safe stop; later records are marked invalid by the workers themselves."""
        causes = ", ".join(f"{e.id} {e.status.value}" for e in snapshot.not_ok())
        frame_ids = {s.id: s.frame_id or s.id for s in self.config.sources}
        for model in self.config.models:
            for source in model.sources:
                info = self.pipeline.context.catalogue.get(model.id)
                payload = Missing(info.payload_type if info is not None and info.payload_type else Detections)
                result = Result(model=model.id, source=source, seq=None, stamp=time.time(),
                                frame_id=frame_ids.get(source, source), status="invalid", payload=payload,
                                error=f"watchdog SAFE_STOP: {causes}")
                for output in self.pipeline.outputs:
                    try:
                        output.publish(result)
                    except Exception as exc:
                        output.errors += 1
                        log.error("output '%s': cannot publish the invalid marker: %s", output.id, exc)
