"""Run a Pipeline in-process to the end of its input (or --max-frames), bounded by a timeout."""

from __future__ import annotations

import threading

from edgeinfer.health import HealthReporter
from edgeinfer.pipeline import Pipeline


def run_pipeline(config, max_frames: int | None = None, timeout: float = 20.0,
                 reporter: HealthReporter | None = None) -> tuple[str, Pipeline]:
    """Start, wait until the pipeline ends (or `timeout` s pass: reason "stopped"), stop. Returns (reason,
    the stopped pipeline)."""
    pipeline = Pipeline(config, reporter=reporter, max_frames=max_frames)
    pipeline.start()
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        reason = pipeline.wait(stop)
    finally:
        timer.cancel()
        pipeline.stop()
    return reason, pipeline
