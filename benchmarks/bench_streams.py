"""Streams per GPU: N realtime 1080p25 H.264 cameras into one model on one GPU, NVDEC vs CPU decode.

    PYTHONPATH=daemon:tests/gpu:tests python benchmarks/bench_streams.py --clip bikes1080.mp4 [--ns 1,4,8,16,32,64]
        [--decode nvdec,cpu] [--seconds 12] [--fit fit.json] [--json out.json] [--leak-minutes 0]

Each camera is the clip looped at its own 25 fps (`realtime: true`, `loop: true`), started one after another so
that cameras are out of phase as real ones are. The model is the demo network's GPU-time stand-in (the "busy"
engine of tests/gpu/standin_tensorrt.py: t(b) = a + c*b GPU ms, a and c fitted to the real network's kernels),
max_batch 8 with the batching deadline, preprocessing on the GPU (1080p -> 416x416), decoding and JSONL output
of every frame as the daemon does. Per N and decoder: per-stream fps (the slowest stream), capture -> publish
latency p50/p99, host CPU cores used by the daemon's process, GPU busy % (NVML), frames dropped at the source
slots. A configuration "holds" when every stream keeps >= 24 fps and p99 <= 50 ms.

`--leak-minutes M`: M minutes of 16 NVDEC streams sampling device memory in use and the process's RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gpu import ThreadCpu, busy_engine  # noqa: E402


class GpuSampler:
    """GPU utilisation (NVML: share of time a kernel ran) and device memory used, sampled every `period_s`."""

    def __init__(self, period_s: float = 0.2):
        self.period_s = period_s
        self.util: list[int] = []
        self.mem_mb: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception as exc:  # no NVML: GPU busy % is reported as None
            print(f"NVML unavailable: {exc}")
            self._nvml = None

    def start(self) -> None:
        self.util.clear()
        self.mem_mb.clear()
        self._stop.clear()
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="gpu-sampler")
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.util.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            self.mem_mb.append(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def config_for(n: int, decode: str, clip: Path, engine: Path, labels: Path, out: Path, max_batch: int,
               batch_wait_ms: float, buffer_sets: int = 3) -> dict:
    sources = [{"id": f"cam{i}", "type": "video", "path": str(clip), "realtime": True, "loop": True,
                "decode": decode} for i in range(n)]
    return {"sources": sources,
            "models": [{"id": "det", "path": str(engine), "labels": str(labels), "device": "gpu",
                        "backend_options": {"runtime": "standin_tensorrt", "buffer_sets": buffer_sets},
                        "sources": [s["id"] for s in sources], "max_batch": max_batch, "batch_wait_ms": batch_wait_ms,
                        "preprocess": {"resize": "stretch", "scale": 1 / 255}, "decoder": {"layout": "v5"}}],
            "outputs": [{"type": "jsonl", "path": str(out), "heartbeat": False}]}


def run_streams(n: int, decode: str, clip: Path, engine: Path, labels: Path, tmp: Path, seconds: float,
                warmup_s: float, max_batch: int, batch_wait_ms: float, sampler: GpuSampler,
                pyspy_out: Path | None = None, buffer_sets: int = 3) -> dict:
    import yaml

    from edgeinfer.config import parse_config
    from edgeinfer.pipeline import Pipeline

    out = tmp / f"streams-{decode}-{n}.jsonl"
    pipeline = Pipeline(parse_config(yaml.safe_dump(config_for(n, decode, clip, engine, labels, out, max_batch,
                                                               batch_wait_ms, buffer_sets))))
    pipeline.start()
    decoders = sorted({getattr(s, "decoder", "?") or "?" for s in pipeline.sources})
    time.sleep(warmup_s)
    stats0 = pipeline.stats()
    cpu0, thread_meter = time.process_time(), ThreadCpu()
    wall0, t0 = time.time(), time.perf_counter()
    sampler.start()
    spy = None
    if pyspy_out is not None:
        import subprocess

        spy = subprocess.Popen(["py-spy", "record", "--gil", "--threads", "--nonblocking", "-r", "200", "-d",
                                str(int(min(seconds, 8))), "-f", "raw", "-o", str(pyspy_out), "-p",
                                str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(seconds)
    sampler.stop()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    threads = thread_meter.stop()
    stats1 = pipeline.stats()
    wall1 = time.time()
    pipeline.stop()
    if spy is not None:
        try:
            spy.wait(timeout=30)
        except Exception:
            spy.kill()
    per_source: dict[str, int] = {f"cam{i}": 0 for i in range(n)}
    ages = []
    for line in out.read_text().splitlines():
        r = json.loads(line)
        if r.get("type") != "detections":
            continue
        published = r["stamp"] + r["age_ms"] / 1e3
        if wall0 <= published <= wall1:
            per_source[r["source"]] = per_source.get(r["source"], 0) + 1
            ages.append(r["age_ms"])
    window = wall1 - wall0
    fps = {s: c / window for s, c in per_source.items()}
    m0, m1 = stats0["models"]["det"], stats1["models"]["det"]
    drops = sum(m1["drops"].values()) - sum(m0["drops"].values())
    ages.sort()
    pick = (lambda q: ages[min(len(ages) - 1, int(q * len(ages)))] if ages else float("nan"))  # noqa: E731
    result = {
        "n": n, "decode": decode, "decoders_used": decoders, "window_s": round(window, 2),
        "frames": sum(per_source.values()), "fps_min": round(min(fps.values()), 2),
        "fps_mean": round(statistics.mean(fps.values()), 2), "age_p50_ms": round(pick(0.5), 2),
        "age_p99_ms": round(pick(0.99), 2), "cpu_cores": round(cpu / elapsed, 2),
        "gpu_busy_pct": round(statistics.mean(sampler.util), 1) if sampler.util else None,
        "slot_drops": drops, "stale_dropped": m1["stale_dropped"] - m0["stale_dropped"],
        "cpu_s_by_thread": threads,
    }
    result["holds"] = result["fps_min"] >= 24 and result["age_p99_ms"] <= 50
    return result


def leak_check(minutes: float, clip: Path, engine: Path, labels: Path, tmp: Path, max_batch: int,
               batch_wait_ms: float, sampler: GpuSampler) -> dict:
    import yaml

    from edgeinfer.config import parse_config
    from edgeinfer.pipeline import Pipeline

    out = tmp / "leak.jsonl"
    pipeline = Pipeline(parse_config(yaml.safe_dump(config_for(16, "nvdec", clip, engine, labels, out, max_batch,
                                                               batch_wait_ms))))
    pipeline.start()
    samples = []
    sampler.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < minutes * 60:
            time.sleep(10)
            mem = sampler.mem_mb[-1] if sampler.mem_mb else None
            samples.append({"t_s": round(time.monotonic() - t0), "rss_mb": round(rss_mb(), 1),
                            "gpu_mem_mb": mem, "published": pipeline.stats()["published"]})
            print(f"leak sample {json.dumps(samples[-1])}", flush=True)  # a run cut short still says something
            out.write_text("")  # the records are not the point here: keep the disk flat
    finally:
        sampler.stop()
        pipeline.stop()
    return {"minutes": minutes, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, required=True, help="a 1080p25 H.264 file (tests/support/h264.py)")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--ns", default="1,4,8,16,32,64")
    parser.add_argument("--decode", default="nvdec,cpu")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=4.0)
    parser.add_argument("--buffer-sets", type=int, default=3)
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval (s) for this process")
    parser.add_argument("--fit", type=Path, help="JSON with a_ms, c_ms (else measured with onnx2torch now)")
    parser.add_argument("--stop-after-fail", action="store_true", help="per decoder, stop at the first N that fails")
    parser.add_argument("--pyspy", type=Path, help="py-spy --gil profile of the largest NVDEC N into this file")
    parser.add_argument("--leak-minutes", type=float, default=0.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from edgeinfer.cuda import runtime as cu

    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    cu.set_device(0)
    demo = args.models / "yolov3-tiny"
    if args.fit:
        fit = json.loads(args.fit.read_text())
    else:
        from standin_tensorrt import measure_gpu_time

        fit = measure_gpu_time(demo / "yolov3-tiny.onnx")
    result: dict = {"device": cu.device_info(0).name, "cpu_count": os.cpu_count(), "fit": fit, "rows": []}
    print(f"GPU {result['device']}, {os.cpu_count()} CPUs; engine stand-in t(b) = {fit['a_ms']:.3f} + "
          f"{fit['c_ms']:.3f}*b ms GPU; max_batch {args.max_batch}, batch_wait_ms {args.batch_wait_ms}, buffer_sets "
          f"{args.buffer_sets}, switch interval {sys.getswitchinterval() * 1e3:.1f} ms")
    ns = [int(n) for n in args.ns.split(",") if n]  # --ns "": the leak check only
    sampler = GpuSampler()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        engine = busy_engine(tmp, fit, max_batch=args.max_batch)
        print("| decode | N | fps per stream (min / mean) | p50 / p99 capture->publish ms | CPU cores | GPU busy % "
              "| slot drops | holds |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
        for decode in args.decode.split(",") if ns else ():
            for n in ns:
                spy = args.pyspy if (args.pyspy and decode == "nvdec" and n == max(ns)) else None
                row = run_streams(n, decode, args.clip, engine, demo / "coco.names", tmp, args.seconds, args.warmup,
                                  args.max_batch, args.batch_wait_ms, sampler, spy, args.buffer_sets)
                result["rows"].append(row)
                print(f"| {decode} ({','.join(row['decoders_used'])}) | {n} | {row['fps_min']:.1f} / "
                      f"{row['fps_mean']:.1f} | {row['age_p50_ms']:.1f} / {row['age_p99_ms']:.1f} | "
                      f"{row['cpu_cores']:.2f} | {row['gpu_busy_pct']} | {row['slot_drops']} | "
                      f"{'yes' if row['holds'] else 'no'} |", flush=True)
                print(f"    CPU s by thread: {row['cpu_s_by_thread']}", flush=True)
                if args.stop_after_fail and not row["holds"]:
                    break
        for decode in args.decode.split(",") if ns else ():
            held = [r["n"] for r in result["rows"] if r["decode"] == decode and r["holds"]]
            print(f"largest N that holds with {decode} decode: {max(held) if held else 'none'}")
        if args.leak_minutes > 0:
            result["leak"] = leak_check(args.leak_minutes, args.clip, engine, demo / "coco.names", tmp,
                                        args.max_batch, args.batch_wait_ms, sampler)
            s = result["leak"]["samples"]
            if s:
                print(f"leak check, 16 NVDEC streams, {args.leak_minutes} min: RSS {s[0]['rss_mb']} -> "
                      f"{s[-1]['rss_mb']} MB, GPU memory {s[0]['gpu_mem_mb']} -> {s[-1]['gpu_mem_mb']} MB, "
                      f"published {s[-1]['published']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
