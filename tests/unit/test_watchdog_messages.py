"""Log lines and STATUS= say which supervision failed, in ms and config keys (issue 8).

Before: `OK -> SAFE_STOP at cycle 34 (det EXPIRED)`, nothing about the deadline, the budget or the keys.
"""

from __future__ import annotations

import logging

from edgeinfer.config import parse_config
from edgeinfer.service import alive_defaults
from edgeinfer.watchdog import Supervisor, WatchdogConfig, build_specs


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Notes:
    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.watchdog_interval_s = None

    def status(self, text: str) -> bool:
        self.statuses.append(text)
        return True


def _run(supervisor: Supervisor, clock: FakeClock, cycles: int) -> None:
    for _ in range(cycles):
        clock.now += 0.05
        supervisor.poll()


def test_a_hung_inference_names_deadline_ms_and_the_keys(caplog):
    config = WatchdogConfig(period_ms=50, startup_grace_ms=0)
    specs = build_specs(config, [], [("det", 200.0)], [])
    clock, notes = FakeClock(), Notes()
    supervisor = Supervisor(config, specs, clock=clock, notifier=notes)  # type: ignore[arg-type]
    supervisor.start(background=False)
    supervisor.begin("det")
    with caplog.at_level(logging.CRITICAL, logger="edgeinfer.watchdog.supervisor"):
        _run(supervisor, clock, 6)
    line = next(r.getMessage() for r in caplog.records if "SAFE_STOP" in r.getMessage())
    assert "det EXPIRED (deadline: an inference running for 250 ms; budget_ms 200" in line, line
    assert "watchdog.deadline_tolerance_cycles 0 x period_ms 50" in line
    assert notes.statuses and "budget_ms 200" in notes.statuses[-1]


def test_a_silent_source_names_alive_ms_and_min_fps(caplog):
    config = WatchdogConfig(period_ms=50, startup_grace_ms=0, alive_tolerance_cycles=1)
    specs = build_specs(config, [("cam", 10.0)], [], [])
    clock = FakeClock()
    supervisor = Supervisor(config, specs, clock=clock)
    supervisor.start(background=False)
    with caplog.at_level(logging.WARNING, logger="edgeinfer.watchdog.supervisor"):
        _run(supervisor, clock, 6)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "cam FAILED (alive: no frame since start" in text and "min_fps 10 = every 100 ms" in text, text
    assert "watchdog.alive_tolerance_cycles 1 x period_ms 50" in text


def test_live_sources_get_a_default_alive_check_and_models_keep_their_own():
    config = parse_config("""
sources:
  - {id: cam, type: rtsp, url: "rtsp://127.0.0.1:9/x"}
  - {id: clip, type: synthetic, width: 64, height: 48, frames: 10}
  - {id: slow, type: synthetic, width: 64, height: 48, min_fps: 0.2}
models:
  - {id: live, path: m.onnx, sources: [cam, slow]}
  - {id: file, path: m.onnx, sources: [clip]}
  - {id: mixed, path: m.onnx, sources: [cam, clip]}
""")
    sources, models = alive_defaults(config)
    assert sources == {"cam": 1.0, "clip": None, "slow": 0.2}
    # a dead camera is the camera's fault: its models are not failed for it (their own min_fps only)
    assert models == {"live": None, "file": None, "mixed": None}
    off = parse_config("""
sources: [{id: cam, type: rtsp, url: "rtsp://127.0.0.1:9/x"}]
models: [{id: live, path: m.onnx, sources: [cam]}]
watchdog: {live_source_min_fps: null}
""")
    assert alive_defaults(off) == ({"cam": None}, {"live": None})
