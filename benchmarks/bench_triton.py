"""Triton (remote, here on loopback) against the local ONNX Runtime backend, side by side in one run.

    python benchmarks/bench_triton.py [--frames 100] [--rounds 5] [--threads 0] [--json out.json]

0. Transport (a null model of the demo's tensor sizes): gRPC and HTTP through the socket and through system
   shared memory; per-frame overhead = client latency (median) - the server's own compute per request
   (`compute_infer` from Triton's statistics endpoint, over the same requests); bytes on the wire per frame.
   Then requests in flight: the pipeline's path (CPU preprocessing of a real frame into the buffer set,
   `submit`, `wait`) with 1, 2 and 3 sets in flight, frames/s.

Needs `make triton-server` (the real tritonserver bundled in nvidia-pytriton, in .venv-triton) and `make models`.

1. Backend level, the same preprocessed demo frame, rounds alternated so machine noise hits every variant
   alike: `infer` latency (median, p95) and sequential fps of the local ONNX Runtime backend, the triton
   backend over gRPC and over HTTP. The server runs the same ONNX file with ONNX Runtime on the same CPU, so the
   difference is what the remote path costs: serialisation, the socket, Triton's scheduler, the Python backend.
2. Pipeline level: `edgeinfer run` on the demo video (every frame, in order) with `backend: onnxruntime`, then
   with `backend: triton` (+ local fallback): fps and per-frame inference time as a user would see them.
Ratios are triton / local. On a real deployment the server has a GPU and the box does not: the trade is this
transport cost against the server's speed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from edgeinfer.backends import create_backend  # noqa: E402
from support.tiny_models import constant_detector  # noqa: E402
from support.triton_server import TritonServer, require_server_python  # noqa: E402

ONNX = ROOT / "models/yolov3-tiny/yolov3-tiny.onnx"
LABELS = ROOT / "models/yolov3-tiny/coco.names"
VIDEO = ROOT / "models/media/bikes.mp4"


def demo_blob() -> np.ndarray:
    cap = cv2.VideoCapture(str(VIDEO))
    ok, image = cap.read()
    cap.release()
    if not ok:
        raise SystemExit("cannot read the demo video: run `make models` first")
    rgb = cv2.cvtColor(cv2.resize(image, (416, 416)), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)


def summary(times_s: list[float]) -> dict:
    ms = sorted(t * 1e3 for t in times_s)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2), "fps": round(len(ms) / (sum(ms) / 1e3), 1)}


def server_stats(url: str, model: str) -> dict[str, tuple[int, int]]:
    """Triton's cumulative inference statistics of one model: {phase: (count, ns)}."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]["inference_stats"]
    finally:
        client.close()
    return {k: (int(v.get("count", 0)), int(v.get("ns", 0))) for k, v in stats.items()}


def stats_delta(before: dict, after: dict) -> dict[str, float]:
    """Mean ms per request of each phase between two snapshots."""
    out = {}
    for phase, (count, ns) in after.items():
        c0, n0 = before.get(phase, (0, 0))
        if count > c0:
            out[phase] = (ns - n0) / (count - c0) / 1e6
    return out


def transport_level(server: TritonServer, onnx: Path, name: str, frames: int, rounds: int) -> dict:
    """Client latency against the server's own compute, through the socket and through shared memory."""
    blob = demo_blob()
    variants: dict[str, dict] = {
        "grpc socket": {"shared_memory": "none"},
        "grpc shared memory": {"shared_memory": "system"},
        "grpc socket gzip": {"shared_memory": "none", "compression": "gzip"},
        "http socket": {"protocol": "http", "shared_memory": "none"},
        "http shared memory": {"protocol": "http", "shared_memory": "system"},
    }
    backends = {}
    for key, extra in variants.items():
        url = server.http_url if extra.get("protocol") == "http" else server.grpc_url
        backends[key] = create_backend("bench", "triton", onnx, {"url": url, "model_name": name,
                                                                 "deadline_ms": 10_000, **extra})
    times: dict[str, list[float]] = {k: [] for k in backends}
    server_ms: dict[str, list[dict]] = {k: [] for k in backends}
    for backend in backends.values():
        backend.activate()
    try:
        for _ in range(rounds):
            for key, backend in backends.items():
                feed = {backend.inputs[0].name: blob}
                before = server_stats(server.grpc_url, name)
                for _ in range(frames // rounds):
                    t0 = time.perf_counter()
                    backend.infer(feed)
                    times[key].append(time.perf_counter() - t0)
                server_ms[key].append(stats_delta(before, server_stats(server.grpc_url, name)))
    finally:
        for backend in backends.values():
            backend.deactivate()
    out_bytes = 2535 * 85 * 4
    result = {}
    for key, t in times.items():
        phases = {p: statistics.mean(d[p] for d in server_ms[key] if p in d)
                  for p in ("compute_infer", "success", "queue", "compute_input", "compute_output")}
        row = summary(t)
        row.update({f"server_{p}_ms": round(v, 3) for p, v in phases.items()})
        row["overhead_ms"] = round(row["median_ms"] - phases["compute_infer"], 2)
        row["wire_bytes"] = 0 if "shared" in key else blob.nbytes + out_bytes
        result[key] = row
    return result


def pipelining_level(server: TritonServer, onnx: Path, name: str, frames: int, rounds: int) -> dict:
    """The pipeline's path with k requests in flight: preprocess the next frame into a free buffer set while
    the others are on the server. k = 1 is one request at a time."""
    from edgeinfer.preprocess import PreprocessConfig

    cap = cv2.VideoCapture(str(VIDEO))
    images = [cap.read()[1] for _ in range(8)]
    cap.release()
    config = PreprocessConfig(resize="letterbox", color="rgb", scale=1 / 255)
    result: dict[str, dict] = {}
    fps: dict[str, list[float]] = {}
    backends = {f"{mode} {k} in flight": (k, create_backend("bench", "triton", onnx, {
        "url": server.grpc_url, "model_name": name, "deadline_ms": 10_000, "shared_memory": mode,
        "buffer_sets": max(k, 2)})) for mode in ("system", "none") for k in (1, 2, 3)}
    for _, backend in backends.values():
        backend.activate()
        backend.open_input_stage(config, batch=1, fixed_batch=False)
    try:
        for _ in range(rounds):
            for key, (depth, backend) in backends.items():
                stage = backend.input_stage
                pending: list = []
                n = frames // rounds
                t0 = time.perf_counter()
                for i in range(n):
                    if len(pending) >= depth:
                        pending.pop(0).wait()
                    set_index = i % max(depth, 1)
                    stage.write(set_index, 0, images[i % len(images)])
                    pending.append(backend.submit(set_index, 1))
                for handle in pending:
                    handle.wait()
                fps.setdefault(key, []).append(n / (time.perf_counter() - t0))
    finally:
        for _, backend in backends.values():
            backend.deactivate()
    for key, values in fps.items():
        result[key] = {"fps": round(statistics.median(values), 1), "fps_min": round(min(values), 1),
                       "fps_max": round(max(values), 1)}
    return result


def payload_sizes() -> dict[str, dict]:
    """What one demo frame weighs on the wire in each form a client could send (the server-side
    preprocessing that uint8 and JPEG need is not built: sizes and encode cost only)."""
    import zlib

    cap = cv2.VideoCapture(str(VIDEO))
    image = cap.read()[1]
    cap.release()
    blob = demo_blob()
    rows = {}
    t0 = time.perf_counter()
    gz = zlib.compress(blob.tobytes(), 6)
    rows["fp32 tensor 1x3x416x416, gzip 6"] = {"bytes": len(gz), "encode_ms": (time.perf_counter() - t0) * 1e3}
    rows["fp32 tensor 1x3x416x416"] = {"bytes": blob.nbytes, "encode_ms": 0.0}
    rows[f"uint8 frame {image.shape[1]}x{image.shape[0]}x3"] = {"bytes": image.nbytes, "encode_ms": 0.0}
    for quality in (90, 75):
        t0 = time.perf_counter()
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        rows[f"JPEG q{quality} of that frame"] = {"bytes": len(jpeg), "encode_ms": (time.perf_counter() - t0) * 1e3}
    return rows


def frame_vs_tensor(server: TritonServer, tensor_model: str, frame_model: str, frames: int, rounds: int) -> dict:
    """Over the socket (what a server on another host gets): the float tensor preprocessed on the client
    against the uint8 camera frame preprocessed on the server (`--uint8-model`). Overhead = client latency -
    the server's compute_infer, which for the frame model includes the server's preprocessing."""
    import tritonclient.grpc as grpcclient

    from edgeinfer.preprocess import PreprocessConfig, Preprocessor

    cap = cv2.VideoCapture(str(VIDEO))
    image = cap.read()[1]
    cap.release()
    prep = Preprocessor(PreprocessConfig(resize="stretch", color="rgb", scale=1 / 255), (1, 3, 416, 416),
                        np.float32)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor_in = grpcclient.InferInput("images", [1, 3, 416, 416], "FP32")
    frame_in = grpcclient.InferInput("frame", list(image.shape), "UINT8")
    times: dict[str, list[float]] = {"fp32 tensor (client preprocesses)": [], "uint8 frame (server preprocesses)": []}
    prep_ms: list[float] = []
    stats: dict[str, list[dict]] = {k: [] for k in times}
    url = server.grpc_url
    try:
        for _ in range(rounds):
            for key, model in zip(times, (tensor_model, frame_model)):
                before = server_stats(url, model)
                for _ in range(frames // rounds):
                    t0 = time.perf_counter()
                    if model == tensor_model:
                        prep.write(0, image)
                        prep_ms.append((time.perf_counter() - t0) * 1e3)
                        tensor_in.set_data_from_numpy(prep.batch(1))
                        client.infer(model, [tensor_in])
                    else:
                        frame_in.set_data_from_numpy(image)
                        client.infer(model, [frame_in])
                    times[key].append(time.perf_counter() - t0)
                stats[key].append(stats_delta(before, server_stats(url, model)))
    finally:
        client.close()
    result = {}
    for (key, t), nbytes in zip(times.items(), (4 * 3 * 416 * 416, image.nbytes)):
        row = summary(t)
        compute = statistics.mean(d["compute_infer"] for d in stats[key] if "compute_infer" in d)
        row.update(server_compute_infer_ms=round(compute, 3), overhead_ms=round(row["median_ms"] - compute, 2),
                   request_bytes=nbytes)
        result[key] = row
    result["fp32 tensor (client preprocesses)"]["client_preprocess_ms"] = round(statistics.median(prep_ms), 2)
    return result


def backend_level(server: TritonServer, frames: int, rounds: int, threads: int, onnx: Path = ONNX,
                  name: str = "yolo") -> dict:
    blob = demo_blob()
    local_opts = {"intra_op_threads": threads} if threads else {}
    variants = {
        "local onnxruntime": create_backend("bench", "onnxruntime", onnx, local_opts),
        "triton grpc": create_backend("bench", "triton", onnx, {"url": server.grpc_url, "model_name": name,
                                                                 "deadline_ms": 10_000}),
    }
    try:
        import tritonclient.http  # noqa: F401
        variants["triton http"] = create_backend("bench", "triton", onnx, {
            "url": server.http_url, "model_name": name, "protocol": "http", "deadline_ms": 10_000})
    except ImportError:
        print("tritonclient[http] not installed: HTTP not measured")
    times: dict[str, list[float]] = {k: [] for k in variants}
    outputs = {}
    for backend in variants.values():
        backend.activate()
    try:
        for _ in range(rounds):
            for name, backend in variants.items():
                feed = {backend.inputs[0].name: blob}
                for _ in range(frames // rounds):
                    t0 = time.perf_counter()
                    out = backend.infer(feed)
                    times[name].append(time.perf_counter() - t0)
                outputs[name] = out[0]
    finally:
        for backend in variants.values():
            backend.deactivate()
    ref = outputs["local onnxruntime"]
    result = {name: summary(t) | {"max_abs_diff_vs_local": float(np.abs(outputs[name] - ref).max())}
              for name, t in times.items()}
    return result


def pipeline_level(server: TritonServer, frames: int, threads: int) -> dict:
    base = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    base["sources"][0]["path"] = str(VIDEO)
    base["models"][0].update(path=str(ONNX), labels=str(LABELS))
    # a speed run, not a failure drill: a budget no loaded machine misses, so no frame is served by the fallback
    # and the watchdog does not stop the run
    base["models"][0]["budget_ms"] = 20_000
    base["outputs"][0]["heartbeat"] = False
    local_opts = {"intra_op_threads": threads} if threads else {}
    runs = {
        "local onnxruntime": {"backend": "onnxruntime", "backend_options": local_opts},
        "triton grpc + fallback": {"backend": "triton", "backend_options": {
            "url": server.grpc_url, "model_name": "yolo", "fallback": {"backend_options": local_opts}}},
    }
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in runs.items():
            data = yaml.safe_load(yaml.safe_dump(base))
            data["models"][0].update(model)
            config = Path(tmp) / "bench.yaml"
            config.write_text(yaml.safe_dump(data))
            proc = subprocess.run([sys.executable, "-m", "edgeinfer", "run", str(config), "--max-frames",
                                   str(frames)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: edgeinfer run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
            records = [json.loads(x) for x in proc.stdout.splitlines()]
            records = [r for r in records if r["type"] == "detections"]
            span = records[-1]["stamp"] - records[0]["stamp"]
            infer = sorted(r["infer_ms"] for r in records)
            result[name] = {"frames": len(records), "fps": round((len(records) - 1) / span, 1),
                            "infer_ms_median": round(statistics.median(infer), 2),
                            "infer_ms_p95": round(infer[int(0.95 * (len(infer) - 1))], 2),
                            "errors": sum(r["status"] != "ok" for r in records)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads, both sides")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--models", type=Path, help="folder holding yolov3-tiny.onnx, coco.names, bikes.mp4 "
                        "(default: the fetched models/)")
    args = parser.parse_args()
    if args.models:
        global ONNX, LABELS, VIDEO
        ONNX, LABELS, VIDEO = (args.models / n for n in ("yolov3-tiny.onnx", "coco.names", "bikes.mp4"))
    require_server_python()
    with tempfile.TemporaryDirectory() as tmp:
        # the transport alone: a model with the demo's input and output sizes that computes almost nothing
        null = constant_detector(Path(tmp) / "null.onnx", np.zeros((2535, 85), np.float32), size=416)
        # two model instances, as a server configured for several clients would be (instance_group count 2):
        # requests in flight can then be served at once
        null_server = TritonServer(null, Path(tmp) / "null.log", name="null", instances=2,
                                   uint8_model="null_frame").start()
        try:
            transport = backend_level(null_server, args.frames, args.rounds, args.threads, null, "null")
            wire = transport_level(null_server, null, "null", args.frames, args.rounds)
            inflight_null = pipelining_level(null_server, null, "null", args.frames, args.rounds)
            frame = frame_vs_tensor(null_server, "null", "null_frame", args.frames, args.rounds)
        finally:
            null_server.stop()
        server = TritonServer(ONNX, Path(tmp) / "triton.log", threads=args.threads, instances=2).start()
        try:
            backend = backend_level(server, args.frames, args.rounds, args.threads)
            inflight_real = pipelining_level(server, ONNX, "yolo", args.frames, args.rounds)
            pipeline = pipeline_level(server, args.frames, args.threads)
        finally:
            server.stop()
    local_b, local_p = backend["local onnxruntime"], pipeline["local onnxruntime"]
    print(f"\nbackend.infer, one demo frame [1,3,416,416] fp32, {args.frames} runs each, {args.rounds} rounds "
          "alternated")
    print(f"{'variant':<22}{'median ms':>11}{'p95 ms':>9}{'fps':>8}{'x local':>9}{'max|diff|':>11}")
    for name, r in backend.items():
        print(f"{name:<22}{r['median_ms']:>11}{r['p95_ms']:>9}{r['fps']:>8}"
              f"{r['median_ms'] / local_b['median_ms']:>9.2f}{r['max_abs_diff_vs_local']:>11.1e}")
    print("\nthe same with a null model of the same input/output sizes (2 MB in, 0.86 MB out): the transport")
    print(f"{'variant':<22}{'median ms':>11}{'p95 ms':>9}{'fps':>8}{'+ms vs local':>14}")
    for name, r in transport.items():
        extra = r["median_ms"] - transport["local onnxruntime"]["median_ms"]
        print(f"{name:<22}{r['median_ms']:>11}{r['p95_ms']:>9}{r['fps']:>8}{extra:>14.2f}")
    print("\nbytes per frame on the wire (demo frame; gRPC/HTTP add a few hundred bytes of framing)")
    for key, r in payload_sizes().items():
        print(f"{key:<36}{r['bytes']:>10}  encode {r['encode_ms']:.2f} ms")
    print("\nover the socket: float tensor from the client vs uint8 frame preprocessed on the server (null model)")
    print(f"{'variant':<36}{'request bytes':>14}{'client med ms':>14}{'server infer':>13}{'overhead ms':>12}")
    for key, r in frame.items():
        print(f"{key:<36}{r['request_bytes']:>14}{r['median_ms']:>14}{r['server_compute_infer_ms']:>13}"
              f"{r['overhead_ms']:>12}")
    print(f"(the client's preprocessing of the float tensor, inside its latency: "
          f"{frame['fp32 tensor (client preprocesses)']['client_preprocess_ms']} ms)")
    print("\nper-frame overhead over the server's own compute (null model; Triton statistics: compute_infer)")
    print(f"{'variant':<22}{'client med ms':>14}{'server infer':>13}{'server total':>13}{'overhead ms':>12}"
          f"{'wire bytes':>12}{'fps':>8}")
    for key, r in wire.items():
        print(f"{key:<22}{r['median_ms']:>14}{r['server_compute_infer_ms']:>13}{r['server_success_ms']:>13}"
              f"{r['overhead_ms']:>12}{r['wire_bytes']:>12}{r['fps']:>8}")
    for label, table in (("null model", inflight_null), ("demo yolov3-tiny", inflight_real)):
        print(f"\nrequests in flight, gRPC, {label}: preprocess a 640x272 frame into a free set, submit, wait")
        print(f"{'variant':<26}{'fps':>8}{'range':>16}{'x 1 in flight':>15}")
        for key, r in table.items():
            one = table[key.rsplit(" ", 3)[0] + " 1 in flight"]["fps"]
            print(f"{key:<26}{r['fps']:>8}{r['fps_min']:>8}-{r['fps_max']:<7}{r['fps'] / one:>15.2f}")
    analyzer = shutil.which("perf_analyzer") or next(
        (str(p) for p in Path(sys.executable).parent.glob("perf_analyzer")), None)
    print("\nperf_analyzer: " + (f"found at {analyzer} (not run by this benchmark)" if analyzer else
          "not installed (tritonclient's wheel does not ship it; NVIDIA's separate `perf-analyzer` package does): "
          "no comparison"))
    print(f"\nedgeinfer run, demo video in file order, {args.frames} frames")
    print(f"{'variant':<26}{'fps':>7}{'infer med':>11}{'infer p95':>11}{'fps / local':>13}{'errors':>8}")
    for name, r in pipeline.items():
        print(f"{name:<26}{r['fps']:>7}{r['infer_ms_median']:>11}{r['infer_ms_p95']:>11}"
              f"{r['fps'] / local_p['fps']:>13.2f}{r['errors']:>8}")
    if args.json:
        args.json.write_text(json.dumps({"backend": backend, "transport": transport, "pipeline": pipeline,
                                         "overhead": wire, "in_flight_null": inflight_null,
                                         "in_flight_demo": inflight_real, "frame_vs_tensor": frame,
                                         "frames": args.frames, "threads": args.threads}, indent=2))


if __name__ == "__main__":
    main()
