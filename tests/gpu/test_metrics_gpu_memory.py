"""/metrics shows the device memory in use where the daemon already runs CUDA, and follows an allocation."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


def gpu_used(metrics) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "edgeinfer_gpu_memory_used_bytes":
                return sample.value
    raise AssertionError("no edgeinfer_gpu_memory_used_bytes in /metrics")


def test_gpu_memory_in_metrics_follows_an_allocation():
    pytest.importorskip("prometheus_client")
    from edgeinfer.cuda.runtime import DeviceBuffer, device_count
    from edgeinfer.web.metrics import DaemonMetrics

    assert device_count() > 0  # loads cuda.bindings.runtime, as a GPU backend would
    metrics = DaemonMetrics(stats=dict, status=lambda: None)
    before = gpu_used(metrics)
    with DeviceBuffer(512 << 20):
        during = gpu_used(metrics)
    assert during - before >= 500 << 20, (before, during)
