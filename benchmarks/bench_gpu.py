"""The GPU path, measured on one GPU in one run (needs CUDA, cuda-python, and for 5-6 torch + onnx2torch):

    PYTHONPATH=daemon:tests/gpu python benchmarks/bench_gpu.py [--json out.json]

1. H2D of a 1080p uint8 frame: pinned vs pageable memory vs the copy engine's peak (a 256 MiB pinned copy);
2. the preprocessing kernel, 1920x1080 -> 640x640 letterbox fp16 NCHW, against its floor: the bytes it must
   move (read the frame, write the tensor) at the device's measured copy bandwidth;
3. the runner's own overhead per frame: TensorRT backend submit + wait with a trivial kernel as the engine,
   wall time minus the GPU's own time (events);
3b. how the host waits for the GPU: after a kernel of 0 and of 770 us (the demo network's batch-1 time), the
   wall time beyond the kernel and the waiting thread's CPU time, for cuda-python's cudaEventSynchronize (holds
   the GIL), polling the event, and the driver's cuEventSynchronize through ctypes (GIL released) on a spinning
   and on a blocking-sync event; and how far another Python thread gets meanwhile (share of its free rate);
4. CUDA graph replay vs eager launches of preprocess -> engine -> download, per frame;
5. the daemon on the demo video vs a bare loop of the same engine on device-resident input: the share of the
   engine's speed the daemon keeps, with two stand-ins for the engine: "busy", whose cost is GPU time
   t(b) = a + c*b fitted to the real network's kernels (an enqueue of microseconds, as TensorRT's), and the real
   network through onnx2torch, which holds the GIL for most of its time (so its ratio measures the stand-in too);
   the daemon's CPU time per frame by thread;
6. a live source (30 fps): capture -> publish latency minus the engine's own time (p50).
The engine call is TensorRT's stand-in (tests/gpu/standin_tensorrt.py): TensorRT cannot be installed here.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))

from edgeinfer.backends import create_backend  # noqa: E402
from edgeinfer.cuda import runtime as cu  # noqa: E402
from edgeinfer.preprocess import PreprocessConfig  # noqa: E402


def events_ms(stream, fn, reps: int) -> float:
    start, end = cu.Event(), cu.Event()
    fn()
    stream.synchronize()
    start.record(stream)
    for _ in range(reps):
        fn()
    end.record(stream)
    end.synchronize()
    ms = end.elapsed_ms(start) / reps
    start.close()
    end.close()
    return ms


def bench_copies(stream) -> dict:
    nbytes = 1080 * 1920 * 3
    pinned = cu.HostBuffer((nbytes,), np.uint8)
    pageable = np.zeros(nbytes, np.uint8)
    dev = cu.DeviceBuffer(256 * 2**20)
    big = cu.HostBuffer((256 * 2**20,), np.uint8)
    t_pinned = events_ms(stream, lambda: cu.copy_async(dev.ptr, pinned.ptr, nbytes, "h2d", stream), 50)
    t_page = events_ms(stream, lambda: cu.copy_async(dev.ptr, pageable.ctypes.data, nbytes, "h2d", stream), 50)
    t_big = events_ms(stream, lambda: cu.copy_async(dev.ptr, big.ptr, big.nbytes, "h2d", stream), 5)
    dev2 = cu.DeviceBuffer(256 * 2**20)
    t_d2d = events_ms(stream, lambda: cu.copy_async(dev2.ptr, dev.ptr, dev.nbytes, "d2d", stream), 10)
    for b in (pinned, dev, big, dev2):
        b.close()
    gbs = lambda n, ms: n / ms / 1e6  # noqa: E731
    return {"frame_bytes": nbytes, "pinned_ms": t_pinned, "pinned_GBps": gbs(nbytes, t_pinned),
            "pageable_ms": t_page, "pageable_GBps": gbs(nbytes, t_page), "peak_GBps": gbs(256 * 2**20, t_big),
            "device_copy_GBps": gbs(2 * 256 * 2**20, t_d2d)}


def bench_kernel(stream, device_gbps: float) -> dict:
    from edgeinfer.preprocess.cuda import GpuInputStage

    config = PreprocessConfig(resize="letterbox", dtype="float16")
    shape = (1, 3, 640, 640)
    dst = cu.DeviceBuffer(int(np.prod(shape)) * 2)
    stage = GpuInputStage(config, shape, np.float16, 1, [dst.ptr], cu.device_info(0).arch, False, False)
    stage.write(0, 0, np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    stage.enqueue_upload(0, 1, stream)
    ms = events_ms(stream, lambda: stage.enqueue_kernel(0, 1, stream), 200)
    moved = 1080 * 1920 * 3 + int(np.prod(shape)) * 2
    floor_ms = moved / (device_gbps * 1e6)
    stage.close()
    dst.close()
    return {"kernel_ms": ms, "bytes_moved": moved, "floor_ms": floor_ms, "ratio_to_floor": ms / floor_ms}


def _scale_backend(tmp: Path, graph: str):
    from standin_tensorrt import write_engine

    engine = write_engine(tmp / "scale.engine", standin="scale", shape=[3, 8, 8], max_batch=1)
    backend = create_backend("scale", "tensorrt", engine, {"runtime": "standin_tensorrt", "cuda_graph": graph},
                             "gpu")
    backend.activate()
    backend.open_input_stage(PreprocessConfig(resize="stretch"), 1, fixed_batch=False)
    return backend


def bench_runner(tmp: Path, frames: int = 3000) -> dict:
    image = np.zeros((8, 8, 3), np.uint8)
    out = {}
    for graph in ("auto", "off"):
        backend = _scale_backend(tmp, graph)
        walls, gpus, writes = [], [], []
        for i in range(frames):
            s = i % backend.buffer_sets
            t0 = time.perf_counter()
            backend.input_stage.write(s, 0, image)
            t1 = time.perf_counter()
            _outs, gpu_ms = backend.submit(s, 1).wait()
            t2 = time.perf_counter()
            writes.append((t1 - t0) * 1e6)
            walls.append((t2 - t1) * 1e6)
            gpus.append(gpu_ms * 1e3)
        backend.deactivate()
        key = "graph" if graph == "auto" else "eager"
        out[key] = {"submit_wait_us": statistics.median(walls), "gpu_us": statistics.median(gpus),
                    "overhead_us": statistics.median(w - g for w, g in zip(walls, gpus)),
                    "stage_write_us": statistics.median(writes)}
    return out


def bench_host_wait(reps: int = 400) -> dict:
    from standin_tensorrt import BusyKernel, python_thread_progress

    kernel, stream = BusyKernel(), cu.Stream()

    def other_thread_rate(work) -> float:
        """Loops/s of a pure-Python counter thread while `work()` runs in this one."""
        seconds, loops = python_thread_progress(work)
        return loops / seconds

    free_rate = other_thread_rate(lambda: time.sleep(0.3))
    out: dict = {}
    for busy_us in (0, 770):
        for mode in ("cudart-sync", "poll", "ctypes-spin", "ctypes-block"):
            event = cu.Event(timing=False, blocking=mode == "ctypes-block")
            wait = {"cudart-sync": event.synchronize, "poll": event._poll}.get(mode, event.wait)

            def once(event=event, wait=wait, busy_us=busy_us) -> tuple[float, float]:
                t0, c0 = time.perf_counter(), time.thread_time()
                kernel.launch(stream, busy_us * 1000)
                event.record(stream)
                wait()
                return (time.perf_counter() - t0) * 1e6 - busy_us, (time.thread_time() - c0) * 1e6

            for _ in range(20):
                once()
            samples = [once() for _ in range(reps)]
            rate = other_thread_rate(lambda once=once: [once() for _ in range(reps)])
            event.close()
            out[f"{mode}@{busy_us}us"] = {
                "beyond_kernel_us_p50": statistics.median(s[0] for s in samples),
                "beyond_kernel_us_p99": sorted(s[0] for s in samples)[int(0.99 * reps)],
                "wait_cpu_us_p50": statistics.median(s[1] for s in samples),
                "other_thread_share": rate / free_rate}
    stream.close()
    return out


def _thread_name(name: str) -> str:
    if ":" in name:  # "prepare:det", "source:cam3": by kind
        return name.split(":")[0]
    return "other" if name.startswith("Thread-") else name


def thread_cpu_s() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) each live thread of this process has used: native id -> (name, s)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tid = int(task.name)
        found[tid] = (_thread_name(names.get(tid, "other")), (int(fields[11]) + int(fields[12])) / tick)
    return found


class ThreadCpu:
    """CPU seconds by thread kind between start() and stop(), threads that ended meanwhile included (sampled
    every 0.1 s, so a thread's last 0.1 s before it ended may be missed)."""

    def __init__(self):
        self._base = thread_cpu_s()
        self._last = dict(self._base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cpu-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._last.update(thread_cpu_s())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._last.update(thread_cpu_s())
        out: dict[str, float] = {}
        for tid, (name, seconds) in self._last.items():
            used = seconds - self._base.get(tid, (name, 0.0))[1]
            if name != "cpu-sampler" and used > 0.005:
                out[name] = round(out.get(name, 0.0) + used, 3)
        return out


def run_pipeline(data: dict, seconds: float = 120) -> tuple[float, list[dict], dict[str, float], dict]:
    """The daemon's pipeline on a config dict until its input ends (or `seconds`): elapsed s, the detection
    records, CPU seconds by thread kind (prepare, infer, publish, source, ...) over the run, pipeline stats."""
    import yaml

    from edgeinfer.config import parse_config
    from edgeinfer.pipeline import Pipeline

    pipeline = Pipeline(parse_config(yaml.safe_dump(data)))
    pipeline.start()
    cpu_meter = ThreadCpu()  # from here: the running pipeline, not loading and warm-up
    t0 = time.perf_counter()
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    pipeline.wait(stop)
    elapsed = time.perf_counter() - t0
    cpu = cpu_meter.stop()
    stats = pipeline.stats()
    pipeline.stop()
    timer.cancel()
    records = []
    for out in data["outputs"]:
        records += [json.loads(line) for line in Path(out["path"]).read_text().splitlines()]
    return elapsed, [r for r in records if r.get("type") == "detections"], cpu, stats


def bare_loop(engine: Path, n: int = 500) -> tuple[float, float]:
    """The engine alone at batch 1 on device-resident input, one enqueue + sync per frame: (fps, median CPU
    ms per enqueue)."""
    backend = create_backend("bare", "tensorrt", engine, {"runtime": "standin_tensorrt"}, "gpu")
    backend.activate()
    ctx, spec = backend.context, backend.inputs[0]
    inp = cu.DeviceBuffer(416 * 416 * 3 * 4)
    outs = [cu.DeviceBuffer(int(np.prod((1, *o.shape[1:]))) * 4) for o in backend.outputs]
    ctx.set_input_shape(spec.name, (1, 3, 416, 416))
    ctx.set_tensor_address(spec.name, inp.ptr)
    for o, b in zip(backend.outputs, outs):
        ctx.set_tensor_address(o.name, b.ptr)
    stream = backend._compute
    for _ in range(20):
        ctx.execute_async_v3(stream.address)
    stream.synchronize()
    n = 3000
    enqueue = []
    t0 = time.perf_counter()
    for _ in range(n):
        t1 = time.perf_counter()
        ctx.execute_async_v3(stream.address)
        enqueue.append(time.perf_counter() - t1)
        stream.synchronize()
    bare_fps = n / (time.perf_counter() - t0)
    enqueue_ms = statistics.median(enqueue) * 1e3  # the stand-in's CPU time per frame, GIL held
    for b in (inp, *outs):
        b.close()
    backend.deactivate()
    return bare_fps, enqueue_ms


def steady_fps(records: list[dict], skip_s: float = 1.0) -> tuple[float, int]:
    """Published records per second after the first `skip_s` (warm-up: kernel compile, graph capture), up to the
    last record: (fps, records counted)."""
    published = sorted(r["stamp"] + r["age_ms"] / 1e3 for r in records)
    start = published[0] + skip_s
    counted = [t for t in published if t >= start]
    return (len(counted) - 1) / (counted[-1] - counted[0]), len(counted)


def daemon_config(tmp: Path, engine: Path, labels: Path, sources: list[dict], max_batch: int = 1,
                  **model: object) -> dict:
    out = tmp / f"out-{time.monotonic_ns()}.jsonl"
    return {"sources": sources,
            "models": [{"id": "det", "path": str(engine), "labels": str(labels), "device": "gpu",
                        "backend_options": {"runtime": "standin_tensorrt"}, "sources": [s["id"] for s in sources],
                        "max_batch": max_batch, "preprocess": {"resize": "stretch", "scale": 1 / 255},
                        "decoder": {"layout": "v5"}, **model}],
            "outputs": [{"type": "jsonl", "path": str(out), "heartbeat": False}]}


def busy_engine(tmp: Path, fit: dict, max_batch: int = 8) -> Path:
    from standin_tensorrt import write_engine

    return write_engine(tmp / f"busy-{max_batch}.engine", standin="busy", a_ms=fit["a_ms"], c_ms=fit["c_ms"],
                        input=[3, 416, 416], outputs={"detections": [2535, 85]}, max_batch=max_batch)


def bench_daemon(tmp: Path, demo_onnx: Path, labels: Path, video: Path, fit: dict) -> dict:
    from standin_tensorrt import write_engine

    result: dict = {"fit": fit}
    engines = {"busy": busy_engine(tmp, fit, max_batch=1),
               "onnx2torch": write_engine(tmp / "demo.engine", standin="onnx2torch", onnx=str(demo_onnx),
                                          max_batch=1)}
    file_source = {"id": "bikes", "type": "video", "path": str(video)}
    # the busy stand-in with the file decoded by NVDEC into GPU memory and by OpenCV on the CPU; onnx2torch with
    # the CPU decode (as before this issue)
    from edgeinfer.sources import nvdec

    runs = [("busy", engines["busy"], "cpu"), ("onnx2torch", engines["onnx2torch"], "cpu")]
    if nvdec.probe()[0]:
        runs.insert(0, ("busy", engines["busy"], "nvdec"))
    for name, engine, decode in runs:
        # alternated twice: bare loop, daemon, bare loop, daemon (clocks and caches settle). The 250-frame file is
        # looped and the rate taken over the steady part: a single pass lasts ~0.25 s at these rates, so start-up
        # and draining would weigh on it as much as the daemon's own cost
        rows = []
        for _ in range(2):
            bare_fps, enqueue_ms = bare_loop(engine)
            source = dict(file_source, decode=decode, loop=True)
            _elapsed, records, cpu, _stats = run_pipeline(daemon_config(tmp, engine, labels, [source]), seconds=5)
            fps, counted = steady_fps(records)
            rows.append({"bare_fps": bare_fps, "bare_enqueue_ms": enqueue_ms, "daemon_fps": fps, "decode": decode,
                         "daemon_frames": counted, "ratio": fps / bare_fps,
                         "cpu_ms_per_frame": {k: round(v * 1e3 / max(1, len(records)), 3) for k, v in cpu.items()}})
        key = name if name == "onnx2torch" else f"{name}-{decode}"
        result[key] = {"runs": rows, "ratio": statistics.median(r["ratio"] for r in rows)}
    # the onnx2torch stand-in's own CPU time (GIL held) per frame, as a share of the daemon's frame period
    o2t = result["onnx2torch"]["runs"][-1]
    result["onnx2torch"]["gil_share_of_daemon_frame"] = o2t["bare_enqueue_ms"] * o2t["daemon_fps"] / 1e3
    # the daemon around an engine that costs nothing (outputs of the same shape, zeroed on the stream): its
    # own ceiling on this video, every stage but the network's compute
    free_engine = write_engine(tmp / "memset.engine", standin="memset", input=[3, 416, 416],
                               outputs={"detections": [2535, 85]}, max_batch=1)
    free_source = dict(file_source, decode="cpu", loop=True)
    _e, free_records, free_cpu, _s = run_pipeline(daemon_config(tmp, free_engine, labels, [free_source]), seconds=5)
    result["daemon_ceiling_fps"] = steady_fps(free_records)[0]
    result["ceiling_cpu_ms_per_frame"] = {k: round(v * 1e3 / max(1, len(free_records)), 3)
                                          for k, v in free_cpu.items()}
    live_source = {"id": "cam", "type": "synthetic", "width": 640, "height": 480, "fps": 30, "frames": 200}
    _e, live, _c, _s = run_pipeline(daemon_config(tmp, engines["busy"], labels, [live_source]))
    extra = [r["age_ms"] - r["infer_ms"] for r in live]
    result.update({"live_frames": len(live), "live_age_p50_ms": statistics.median(r["age_ms"] for r in live),
                   "live_infer_p50_ms": statistics.median(r["infer_ms"] for r in live),
                   "live_age_minus_engine_p50_ms": statistics.median(extra)})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    cu.set_device(0)
    info = cu.device_info(0)
    stream = cu.Stream()
    result = {"device": info.name, "arch": info.arch}
    result["copies"] = bench_copies(stream)
    result["kernel"] = bench_kernel(stream, result["copies"]["device_copy_GBps"])
    with tempfile.TemporaryDirectory() as tmp:
        result["runner"] = bench_runner(Path(tmp))
        result["host_wait"] = bench_host_wait()
        demo = args.models / "yolov3-tiny"
        from standin_tensorrt import measure_gpu_time

        fit = measure_gpu_time(demo / "yolov3-tiny.onnx")
        result["daemon"] = bench_daemon(Path(tmp), demo / "yolov3-tiny.onnx", demo / "coco.names",
                                        args.models / "media" / "bikes.mp4", fit)
    c, k, r, d = result["copies"], result["kernel"], result["runner"], result["daemon"]
    print(f"GPU: {info.name} ({info.arch})")
    print("| measure | value |\n| --- | --- |")
    print(f"| 1. H2D 1080p uint8 (6.2 MB): pinned | {c['pinned_ms'] * 1e3:.0f} us ({c['pinned_GBps']:.1f} GB/s) |")
    print(f"| 1. H2D 1080p uint8: pageable | {c['pageable_ms'] * 1e3:.0f} us ({c['pageable_GBps']:.1f} GB/s) |")
    print(f"| 1. copy engine peak (256 MiB pinned) | {c['peak_GBps']:.1f} GB/s |")
    print(f"| 2. kernel 1920x1080 -> 640x640 fp16 | {k['kernel_ms'] * 1e3:.1f} us; floor {k['floor_ms'] * 1e3:.1f} us "
          f"({k['bytes_moved'] / 1e6:.1f} MB at {c['device_copy_GBps']:.0f} GB/s): {k['ratio_to_floor']:.2f}x |")
    for key in ("graph", "eager"):
        print(f"| 3/4. runner ({key}): submit+wait {r[key]['submit_wait_us']:.1f} us, GPU {r[key]['gpu_us']:.1f} us,"
              f" overhead {r[key]['overhead_us']:.1f} us; stage write {r[key]['stage_write_us']:.1f} us |")
    for key, w in result["host_wait"].items():
        print(f"| 3b. host wait, {key}: beyond the kernel p50 {w['beyond_kernel_us_p50']:.1f} us, p99 "
              f"{w['beyond_kernel_us_p99']:.1f} us; waiting thread's CPU {w['wait_cpu_us_p50']:.1f} us; another "
              f"thread gets {w['other_thread_share']:.2f} of its free rate |")
    f = d["fit"]
    print("| 5a. the network's GPU time (onnx2torch kernels) | " + ", ".join(
        f"b={b}: {v['kernels_ms']:.3f} ms (events {v['events_ms']:.3f})" for b, v in f["batches"].items())
        + f"; fit t(b) = {f['a_ms']:.3f} + {f['c_ms']:.3f}*b ms |")
    for name in ("busy-nvdec", "busy-cpu", "onnx2torch"):
        for r in d.get(name, {}).get("runs", []):
            print(f"| 5. daemon ({r['decode']} decode) {r['daemon_fps']:.1f} fps ({r['daemon_frames']} frames) / bare "
                  f"{name.split('-')[0]} loop {r['bare_fps']:.1f} fps (enqueue {r['bare_enqueue_ms']:.3f} ms CPU) | "
                  f"{r['ratio']:.2f} |")
            print(f"| 5. CPU ms per frame by thread ({name}) | {r['cpu_ms_per_frame']} |")
    print(f"| 5b. onnx2torch: its own enqueue (GIL held) x daemon fps = share of the daemon's time | "
          f"{d['onnx2torch']['gil_share_of_daemon_frame']:.2f} |")
    print(f"| 5c. daemon around an engine that costs nothing (its own ceiling) | {d['daemon_ceiling_fps']:.0f} fps; "
          f"CPU ms/frame {d['ceiling_cpu_ms_per_frame']} |")
    print(f"| 6. live 30 fps: age p50 {d['live_age_p50_ms']:.2f} ms, engine p50 {d['live_infer_p50_ms']:.2f} ms | "
          f"age - engine p50 {d['live_age_minus_engine_p50_ms']:.2f} ms |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
