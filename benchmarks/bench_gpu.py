"""The GPU path, measured on one GPU in one run (needs CUDA, cuda-python, and for 5-6 torch + onnx2torch):

    PYTHONPATH=daemon:tests/gpu python benchmarks/bench_gpu.py [--json out.json]

1. H2D of a 1080p uint8 frame: pinned vs pageable memory vs the copy engine's peak (a 256 MiB pinned copy);
2. the preprocessing kernel, 1920x1080 -> 640x640 letterbox fp16 NCHW, against its floor: the bytes it must
   move (read the frame, write the tensor) at the device's measured copy bandwidth;
3. the runner's own overhead per frame: TensorRT backend submit + wait with a trivial kernel as the engine,
   wall time minus the GPU's own time (events);
4. CUDA graph replay vs eager launches of preprocess -> engine -> download, per frame;
5. the daemon on the demo video (the real network via the stand-in engine) vs a bare loop of the same engine
   on device-resident input: the share of the engine's speed the daemon keeps;
6. a live source (30 fps): capture -> publish latency minus the engine's own time (p50).
The engine call is TensorRT's stand-in (tests/gpu/standin_tensorrt.py): TensorRT cannot be installed here.
"""

from __future__ import annotations

import argparse
import json
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


def bench_daemon(tmp: Path, demo_onnx: Path, labels: Path, video: Path) -> dict:
    from standin_tensorrt import write_engine

    from edgeinfer.config import parse_config
    from edgeinfer.pipeline import Pipeline

    engine = write_engine(tmp / "demo.engine", standin="onnx2torch", onnx=str(demo_onnx), max_batch=1)
    # the bare loop: the same engine, batch 1, input already on the device, no preprocessing or decoding
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
    n = 500
    t0 = time.perf_counter()
    for _ in range(n):
        ctx.execute_async_v3(stream.address)
        stream.synchronize()
    bare_fps = n / (time.perf_counter() - t0)
    for b in (inp, *outs):
        b.close()
    backend.deactivate()

    def run(source: dict, max_frames: int | None) -> tuple[float, list[dict]]:
        out = tmp / f"out-{time.monotonic_ns()}.jsonl"
        data = {"sources": [source],
                "models": [{"id": "det", "path": str(engine), "labels": str(labels), "device": "gpu",
                            "backend_options": {"runtime": "standin_tensorrt"}, "sources": [source["id"]],
                            "preprocess": {"resize": "stretch", "scale": 1 / 255}, "decoder": {"layout": "v5"}}],
                "outputs": [{"type": "jsonl", "path": str(out), "heartbeat": False}]}
        import yaml

        pipeline = Pipeline(parse_config(yaml.safe_dump(data)), max_frames=max_frames)
        pipeline.start()
        t0 = time.perf_counter()
        stop = threading.Event()
        threading.Timer(120, stop.set).start()
        pipeline.wait(stop)
        elapsed = time.perf_counter() - t0
        pipeline.stop()
        stop.set()
        records = [json.loads(line) for line in out.read_text().splitlines()]
        return elapsed, [r for r in records if r.get("type") == "detections"]

    elapsed, records = run({"id": "bikes", "type": "video", "path": str(video)}, None)
    daemon_fps = len(records) / elapsed
    _e, live = run({"id": "cam", "type": "synthetic", "width": 640, "height": 480, "fps": 30, "frames": 200}, None)
    extra = [r["age_ms"] - r["infer_ms"] for r in live]
    return {"bare_fps": bare_fps, "daemon_fps": daemon_fps, "daemon_frames": len(records),
            "ratio": daemon_fps / bare_fps, "live_frames": len(live),
            "live_age_p50_ms": statistics.median(r["age_ms"] for r in live),
            "live_infer_p50_ms": statistics.median(r["infer_ms"] for r in live),
            "live_age_minus_engine_p50_ms": statistics.median(extra)}


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
        demo = args.models / "yolov3-tiny"
        result["daemon"] = bench_daemon(Path(tmp), demo / "yolov3-tiny.onnx", demo / "coco.names",
                                        args.models / "media" / "bikes.mp4")
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
    print(f"| 5. daemon {d['daemon_fps']:.1f} fps ({d['daemon_frames']} frames) / bare engine loop "
          f"{d['bare_fps']:.1f} fps | {d['ratio']:.2f} |")
    print(f"| 6. live 30 fps: age p50 {d['live_age_p50_ms']:.2f} ms, engine p50 {d['live_infer_p50_ms']:.2f} ms | "
          f"age - engine p50 {d['live_age_minus_engine_p50_ms']:.2f} ms |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
