"""`edgeinfer bench MODEL|ENGINE`: latency percentiles, throughput and the host/device split of one model on
any backend, measured through the same input stage and `submit` the pipeline uses (trtexec --loadEngine's
counterpart, for every backend).

Sequential runs give the latency (submit -> outputs ready). For an asynchronous (GPU) backend the device time
comes from its CUDA events and the rest is host time; a synchronous backend (ONNX Runtime on the CPU) cannot
tell the two apart and says so. An asynchronous backend also gets a pipelined pass with every buffer set in
flight, which is the throughput the daemon reaches.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..backends import create_backend
from ..backends.base import CompletedInference
from ..preprocess import PreprocessConfig


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "min": float(a.min()),
            "max": float(a.max())}


def _stage_config(spec, size: tuple[int, int] | None) -> PreprocessConfig:
    dtype = spec.dtype.name if spec.dtype.name in ("float32", "float16", "uint8") else "float32"
    layout = "nhwc" if len(spec.shape) == 4 and spec.shape[-1] in (1, 3) else "nchw"
    return PreprocessConfig(dtype=dtype, layout=layout, size=size)


def run_bench(path, backend: str = "auto", device: str = "auto", batch: int = 1, duration: float = 5.0,
              options: dict[str, Any] | None = None, size: tuple[int, int] | None = None,
              warmup: int = 5) -> dict[str, Any]:
    """Raises BackendError (cannot load) or ValueError (batch/size do not fit the model)."""
    runner = create_backend("bench", backend, path, options or {}, device)
    runner.activate(warmup_batch=batch)
    try:
        fixed = runner.max_batch
        if fixed is not None and batch != fixed:
            raise ValueError(f"the model's batch dimension is fixed at {fixed}: use --batch {fixed}")
        limit = runner.batch_limit
        if limit is not None and batch > limit:
            raise ValueError(f"--batch {batch} but the engine's optimization profile allows up to {limit}")
        stage = runner.open_input_stage(_stage_config(runner.inputs[0], size), batch, fixed_batch=fixed is not None)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        for s in range(stage.sets):
            for item in range(batch):
                stage.write(s, item, image)
        for i in range(warmup):
            runner.submit(i % stage.sets, batch).wait()
        wall, device_ms = [], []
        synchronous = True
        t_start = time.perf_counter()
        i = 0
        while True:
            t0 = time.perf_counter()
            handle = runner.submit(i % stage.sets, batch)
            _, ms = handle.wait()
            t1 = time.perf_counter()
            wall.append((t1 - t0) * 1e3)
            if not isinstance(handle, CompletedInference):
                synchronous = False
                device_ms.append(ms)
            i += 1
            if t1 - t_start >= duration:
                break
        elapsed = time.perf_counter() - t_start
        result: dict[str, Any] = {
            "model": str(path), "backend": runner.describe(), "batch": batch, "iterations": len(wall),
            "duration_s": round(elapsed, 3), "latency_ms": percentiles(wall),
            "throughput_ips": len(wall) * batch / elapsed,
            "device_ms": None if synchronous else percentiles(device_ms),
            "host_ms": None if synchronous else percentiles([w - d for w, d in zip(wall, device_ms)]),
            "split": ("synchronous backend: host and device are one (CPU)" if synchronous
                      else "device from CUDA events; host = latency - device"),
        }
        if not synchronous:
            result["pipelined_throughput_ips"] = _pipelined(runner, stage.sets, batch, duration)
        return result
    finally:
        runner.deactivate()


def _pipelined(runner, sets: int, batch: int, duration: float) -> float:
    """Every buffer set in flight: submit the next set before waiting for the oldest, as the pipeline does."""
    inflight = []
    done = 0
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < duration:
        if len(inflight) == sets:
            inflight.pop(0).wait()
            done += 1
        inflight.append(runner.submit(i % sets, batch))
        i += 1
    for handle in inflight:
        handle.wait()
        done += 1
    return done * batch / (time.perf_counter() - t0)


def format_table(result: dict[str, Any]) -> str:
    rows = [("latency", result["latency_ms"]), ("device", result["device_ms"]), ("host", result["host_ms"])]
    lines = [f"{result['model']}  {result['backend']}  batch {result['batch']}  "
             f"{result['iterations']} runs in {result['duration_s']:.1f} s",
             f"{'ms':<10}{'p50':>9}{'p90':>9}{'p99':>9}{'mean':>9}{'min':>9}{'max':>9}"]
    for name, stats in rows:
        if stats is not None:
            lines.append(f"{name:<10}" + "".join(f"{stats[k]:>9.2f}" for k in ("p50", "p90", "p99", "mean", "min",
                                                                              "max")))
    lines.append(f"throughput {result['throughput_ips']:.1f} images/s (sequential)"
                 + (f", {result['pipelined_throughput_ips']:.1f} images/s pipelined"
                    if "pipelined_throughput_ips" in result else ""))
    lines.append(f"split      {result['split']}")
    return "\n".join(lines)
