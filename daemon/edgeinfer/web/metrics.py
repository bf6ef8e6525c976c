"""Prometheus metrics of the running daemon, in the text format prometheus-client renders.

Two kinds:
- read at scrape time from the pipeline's own counters and the latest heartbeat (frames in, out and dropped
  per source and model, errors, fps, frame age, watchdog state): nothing is counted twice, and nothing costs
  the hot path anything;
- observed per result by the http output (records per model, source and status; inference and end-to-end
  latency histograms): a few microseconds on the publish thread.

Every metric lives in this output's own registry (not prometheus-client's global one), so two daemons in one
process (a reload, the tests) never collide.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from ..cuda.runtime import mem_get_info  # imports cuda-python only when called

STATES = ("OK", "DEGRADED", "FAULT", "SAFE_STOP")
ENTITY_STATUSES = ("OK", "FAILED", "EXPIRED")
# seconds: from sub-millisecond GPU engines to a CPU model on a loaded edge box
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class DaemonMetrics:
    def __init__(self, stats: Callable[[], dict[str, Any] | None], status: Callable[[], dict[str, Any] | None],
                 extra: Callable[[], dict[str, Any]] | None = None):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=False)
        self._stats = stats
        self._status = status
        self._extra = extra or (lambda: {})
        self.records = Counter("edgeinfer_records", "Result records published, per model, source and status",
                               ["model", "source", "status"], registry=self.registry)
        self.inference = Histogram("edgeinfer_inference_seconds", "Inference time per frame (backend call)",
                                   ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.end_to_end = Histogram("edgeinfer_end_to_end_seconds", "Capture to publish, per frame",
                                    ["model", "source"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_ScrapeTimeCollector(self))

    def observe(self, model: str, source: str, status: str, infer_ms: float | None, age_ms: float | None) -> None:
        """One published result (publish thread)."""
        self.records.labels(model, source, status).inc()
        if infer_ms is not None and status == "ok":
            self.inference.labels(model).observe(infer_ms / 1e3)
        if age_ms is not None:
            self.end_to_end.labels(model, source).observe(age_ms / 1e3)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _ScrapeTimeCollector:
    """Builds metric families from the pipeline counters and the heartbeat at each scrape."""

    def __init__(self, owner: DaemonMetrics):
        self.owner = owner

    def describe(self) -> list[Any]:
        return []  # families depend on the config; registering must not call collect()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.owner._stats() or {}
        status = self.owner._status() or {}

        def counter(name: str, doc: str, labels: list[str]) -> Any:
            return CounterMetricFamily(name, doc, labels=labels)

        def gauge(name: str, doc: str, labels: list[str]) -> Any:
            return GaugeMetricFamily(name, doc, labels=labels)

        # -- sources
        frames_in = counter("edgeinfer_source_frames", "Frames captured per source (frames in)", ["source"])
        bad = counter("edgeinfer_source_bad_frames", "Frames a source could not decode, per source", ["source"])
        reconnects = counter("edgeinfer_source_reconnects", "Reconnections per source", ["source"])
        source_fps = gauge("edgeinfer_source_fps", "Capture rate per source (frames/s)", ["source"])
        source_state = gauge("edgeinfer_source_state", "1 for the state each source is in", ["source", "state"])
        for sid, s in (stats.get("sources") or {}).items():
            frames_in.add_metric([sid], s.get("frames", 0))
            bad.add_metric([sid], s.get("bad_frames", 0))
            reconnects.add_metric([sid], s.get("reconnects", 0))
            source_fps.add_metric([sid], s.get("fps", 0.0))
            source_state.add_metric([sid, str(s.get("state"))], 1)
        yield from (frames_in, bad, reconnects, source_fps, source_state)

        # -- models
        taken = counter("edgeinfer_model_frames_taken", "Frames a model took from its sources", ["model"])
        inferred = counter("edgeinfer_model_frames_inferred", "Frames inferred per model", ["model"])
        published = counter("edgeinfer_model_frames_published", "Frames published per model (frames out)",
                            ["model"])
        dropped = counter("edgeinfer_frames_dropped", "Frames dropped per model and source: overwritten "
                          "in the one-frame slot before the model took them", ["model", "source"])
        stale = counter("edgeinfer_model_stale_dropped", "Results dropped as older than max_age_ms", ["model"])
        invalid = counter("edgeinfer_model_invalid_published", "Records published as invalid (SAFE_STOP)",
                          ["model"])
        errors = counter("edgeinfer_model_errors", "Errors per model and kind", ["model", "kind"])
        model_fps = gauge("edgeinfer_model_fps", "Published frames per second per model", ["model"])
        for mid, m in (stats.get("models") or {}).items():
            taken.add_metric([mid], m.get("taken", 0))
            inferred.add_metric([mid], m.get("inferred", 0))
            published.add_metric([mid], m.get("published", 0))
            stale.add_metric([mid], m.get("stale_dropped", 0))
            invalid.add_metric([mid], m.get("invalid_published", 0))
            for kind, key in (("infer", "infer_errors"), ("decode", "decode_errors"), ("bad_frame", "bad_frames")):
                errors.add_metric([mid, kind], m.get(key, 0))
            model_fps.add_metric([mid], m.get("fps", 0.0))
            for sid, n in (m.get("drops") or {}).items():
                dropped.add_metric([mid, sid], n)
        yield from (taken, inferred, published, dropped, stale, invalid, errors, model_fps)

        # -- outputs
        out_published = counter("edgeinfer_output_published", "Records written per output", ["output"])
        out_errors = counter("edgeinfer_output_errors", "Failed writes per output", ["output"])
        for oid, o in (stats.get("outputs") or {}).items():
            out_published.add_metric([oid], o.get("published", 0))
            out_errors.add_metric([oid], o.get("errors", 0))
        yield from (out_published, out_errors)

        # -- watchdog (from the latest heartbeat)
        state = gauge("edgeinfer_watchdog_state", "1 for the daemon's watchdog state, 0 for the others",
                      ["state"])
        current = status.get("state")
        for name in STATES:
            state.add_metric([name], 1.0 if name == current else 0.0)
        cycle = gauge("edgeinfer_watchdog_cycle", "The supervisor's cycle of the latest heartbeat", [])
        if "cycle" in status:
            cycle.add_metric([], status["cycle"])
        entity = gauge("edgeinfer_entity_status", "1 for each supervised entity's status", ["entity", "kind",
                                                                                             "status"])
        for eid, e in (status.get("entities") or {}).items():
            entity.add_metric([eid, str(e.get("kind")), str(e.get("status"))], 1)
        age = gauge("edgeinfer_frame_age_seconds", "Age of the newest published frame per source", ["source"])
        for sid, ms in (status.get("frame_age_ms") or {}).items():
            if ms is not None:
                age.add_metric([sid], ms / 1e3)
        yield from (state, cycle, entity, age)

        yield from _gpu_memory(gauge)

        # -- this output's own live view
        extra = self.owner._extra()
        for name, (kind, doc, value) in extra.items():
            family = counter(name, doc, []) if kind == "counter" else gauge(name, doc, [])
            family.add_metric([], value)
            yield family


def _gpu_memory(gauge: Callable[..., Any]) -> Iterator[Any]:
    """Device memory in use, where the daemon already runs CUDA (cuda-python loaded by a GPU backend or the GPU
    preprocessing): never imports CUDA itself, so a CPU box pays nothing and shows no such metric."""
    if "cuda.bindings.runtime" not in sys.modules:
        return
    try:
        free, total = mem_get_info()
    except Exception:  # no device, or a driver error: the metric is simply not known now
        return
    used = gauge("edgeinfer_gpu_memory_used_bytes", "Device memory in use on the current CUDA device", [])
    used.add_metric([], total - free)
    size = gauge("edgeinfer_gpu_memory_total_bytes", "Device memory of the current CUDA device", [])
    size.add_metric([], total)
    yield from (used, size)
