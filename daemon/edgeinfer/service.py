"""The daemon around the pipeline: watchdog supervisor, heartbeats, safe-stop actions and systemd.

Start-up order matters for systemd: outputs, models (loaded and warmed up) and sources start first, then the
supervisor, and only then READY=1 — so `systemctl start` returns when the daemon can really answer, and the
WatchdogSec= timer (which systemd arms at READY=1) never sees a warm-up.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .config import Config
from .pipeline import Pipeline
from .results import Result
from .watchdog import GlobalState, Snapshot, Supervisor, SystemdNotifier, build_specs

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0  # how often systemd's STATUS= line (state, fps) is refreshed


class Daemon:
    def __init__(self, config: Config, max_frames: int | None = None, notifier: SystemdNotifier | None = None):
        self.config = config
        self.notifier = notifier or SystemdNotifier.from_env()
        wd = config.watchdog
        specs = build_specs(
            wd,
            sources=[(s.id, s.min_fps) for s in config.sources],
            models=[(m.id, m.budget_ms, m.min_fps) for m in config.models],
            outputs=[o.id or o.type for o in config.outputs],
        )
        self.supervisor = Supervisor(wd, specs, notifier=self.notifier, on_cycle=[self._on_cycle])
        self.pipeline = Pipeline(config, reporter=self.supervisor, max_frames=max_frames,
                                 detections_valid=lambda: self.supervisor.detections_valid)
        self.stop_requested = threading.Event()
        self.last_heartbeat: dict[str, Any] | None = None
        self.clean_stop = True
        self._status_every = max(1, round(STATUS_EVERY_S * 1000 / wd.period_ms))
        self._invalid_marked = False

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self.notifier.status("starting: loading and warming up models")
        self.pipeline.start()
        for output in self.pipeline.outputs:
            if hasattr(output, "set_control_handler"):
                output.set_control_handler(self.handle_command, commands=("reset", "status"))
        self.supervisor.start()
        self.notifier.ready(status=f"running: {len(self.pipeline.workers)} model(s), "
                                   f"{len(self.pipeline.sources)} source(s)")

    def run(self) -> tuple[str, int]:
        """Until stopped, --max-frames, end of input, or a safe stop that asks to exit. Returns
        (reason, exit code)."""
        reason = self.pipeline.wait(self.stop_requested)
        code = self.supervisor.exit_code
        if code is not None:
            reason = "safe-stop"
        return reason, (code or 0)

    def stop(self) -> None:
        self.notifier.stopping()
        self.supervisor.stop()
        self.clean_stop = self.pipeline.stop(timeout_s=2.0)
        self.notifier.close()

    # -- commands (SIGUSR1, ZeroMQ control) ----------------------------------------------------------------
    def handle_command(self, command: str, request: dict[str, Any]) -> dict[str, Any]:
        if command == "reset":
            self.supervisor.reset()
            return {"ok": True, "reply": "reset requested", "state": self.supervisor.state.value}
        if command == "status":
            return {"ok": True, "heartbeat": self.last_heartbeat}
        return {"ok": False, "error": f"unknown command '{command}'; known: ping, reset, status"}

    # -- every supervision cycle (on the supervisor thread) ---------------------------------------------
    def _on_cycle(self, snapshot: Snapshot) -> None:
        heartbeat = self.heartbeat(snapshot)
        self.last_heartbeat = heartbeat
        for output in self.pipeline.outputs:
            try:
                output.heartbeat(heartbeat)
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
            self.notifier.status(f"{snapshot.state.value}: {fps}")
        if self.supervisor.exit_code is not None:
            self.stop_requested.set()
        if all(o.closed_by_peer for o in self.pipeline.outputs) and not self.stop_requested.is_set():
            log.info("every output was closed by its reader; stopping")
            self.stop_requested.set()

    def heartbeat(self, snapshot: Snapshot) -> dict[str, Any]:
        ages = self.pipeline.frame_ages_ms()
        body = {"type": "heartbeat", "stamp": round(time.time(), 6)}
        body.update(self.supervisor.heartbeat(snapshot))
        body["newest_frame_age_ms"] = min(ages.values()) if ages else None
        body["frame_age_ms"] = ages
        body["fps"] = self.pipeline.fps()
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
                result = Result(model=model.id, source=source, seq=None, stamp=time.time(),
                                frame_id=frame_ids.get(source, source), status="invalid",
                                error=f"watchdog SAFE_STOP: {causes}")
                for output in self.pipeline.outputs:
                    try:
                        output.publish_result(result)
                    except Exception as exc:
                        output.errors += 1
                        log.error("output '%s': cannot publish the invalid marker: %s", output.id, exc)
