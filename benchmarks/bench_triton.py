"""Triton (remote, here on loopback) against the local ONNX Runtime backend, side by side in one run.

    python benchmarks/bench_triton.py [--frames 100] [--rounds 5] [--threads 0] [--json out.json]

0. Transport (a null model of the demo's tensor sizes): gRPC and HTTP through the socket and through system
   shared memory; per-frame overhead = client latency (median) - the server's own compute per request
   (`compute_infer` from Triton's statistics endpoint, over the same requests); bytes on the wire per frame.
   Then requests in flight: the pipeline's path (CPU preprocessing of a real frame into the buffer set,
   `submit`, `wait`) with 1, 2 and 3 sets in flight, frames/s, and the CPU per frame of this process and of the
   server's processes (what bounds any overlap on a small machine).
   What to send over TCP: the float tensor, the letterboxed uint8 frame, a JPEG of it (`send:`), with and
   without gRPC compression, against the example model repository (examples/triton: preprocessing on the
   server in a Triton ensemble): bytes counted on the connection, latency, the server's compute.

Needs `make triton-server` (the real tritonserver bundled in nvidia-pytriton, in .venv-triton) and `make models`.

1. Backend level, the same preprocessed demo frame, rounds alternated so machine noise hits every variant
   alike: `infer` latency (median, p95) and sequential fps of the local ONNX Runtime backend, the triton
   backend over gRPC and over HTTP. The server runs the same ONNX file with ONNX Runtime on the same CPU, so the
   difference is what the remote path costs: serialisation, the socket, Triton's scheduler, the Python backend.
2. Pipeline level: `edgeinfer run` on the demo video (every frame, in order) with `backend: onnxruntime`, then
   with `backend: triton` (+ local fallback): fps and per-frame inference time as a user would see them.
3. Requests in flight with the demo model on a server of one model instance per core, one intra-op thread each.
Ratios are triton / local. On a real deployment the server has a GPU and the box does not: the trade is this
transport cost against the server's speed.
"""

from __future__ import annotations

import argparse
import json
import os
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
from support.triton_server import (  # noqa: E402
    EXAMPLE_REPOSITORY,
    TritonServer,
    process_tree,
    require_server_python,
)

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


def process_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (all their threads), from /proc."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def pipelining_level(server: TritonServer, onnx: Path, name: str, frames: int, rounds: int) -> dict:
    """The pipeline's path with k requests in flight: preprocess the next frame into a free buffer set while
    the others are on the server. k = 1 is one request at a time. Also the CPU each frame costs this process
    (client) and the server's process tree: on a machine of N cores no overlap can beat N / (client + server
    CPU per frame), whatever is in flight."""
    import os
    import resource

    from edgeinfer.preprocess import PreprocessConfig

    cap = cv2.VideoCapture(str(VIDEO))
    images = [cap.read()[1] for _ in range(8)]
    cap.release()
    config = PreprocessConfig(resize="letterbox", color="rgb", scale=1 / 255)
    result: dict[str, dict] = {}
    fps: dict[str, list[float]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}
    backends = {f"{mode} {k} in flight": (k, create_backend("bench", "triton", onnx, {
        "url": server.grpc_url, "model_name": name, "deadline_ms": 10_000, "shared_memory": mode,
        "buffer_sets": max(k, 2)})) for mode in ("system", "none") for k in (1, 2, 3)}
    for _, backend in backends.values():
        backend.activate()
        backend.open_input_stage(config, batch=1, fixed_batch=False)
    tree = process_tree(server.proc.pid)
    try:
        for _ in range(rounds):
            for key, (depth, backend) in backends.items():
                stage = backend.input_stage
                pending: list = []
                n = frames // rounds
                client0, server0 = resource.getrusage(resource.RUSAGE_SELF), process_cpu_s(tree)
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
                client1 = resource.getrusage(resource.RUSAGE_SELF)
                client_s = (client1.ru_utime + client1.ru_stime) - (client0.ru_utime + client0.ru_stime)
                cpu.setdefault(key, []).append((client_s / n, (process_cpu_s(tree) - server0) / n))
    finally:
        for _, backend in backends.values():
            backend.deactivate()
    cores = os.cpu_count() or 1
    for key, values in fps.items():
        client_ms = 1e3 * statistics.median(c for c, _ in cpu[key])
        server_ms = 1e3 * statistics.median(s for _, s in cpu[key])
        result[key] = {"fps": round(statistics.median(values), 1), "fps_min": round(min(values), 1),
                       "fps_max": round(max(values), 1), "client_cpu_ms": round(client_ms, 2),
                       "server_cpu_ms": round(server_ms, 2),
                       "cpu_ceiling_fps": round(cores * 1e3 / (client_ms + server_ms), 1)}
    return result


SEND_VARIANTS = {  # label: (server model, backend options)
    "float32 tensor": ("yolo", {"send": "float"}),
    "float32 tensor, gzip": ("yolo", {"send": "float", "compression": "gzip"}),
    "uint8 frame": ("yolo_uint8", {"send": "uint8"}),
    "uint8 frame, gzip": ("yolo_uint8", {"send": "uint8", "compression": "gzip"}),
    "uint8 frame, deflate": ("yolo_uint8", {"send": "uint8", "compression": "deflate"}),
    "JPEG q90": ("yolo_jpeg", {"send": "jpeg", "jpeg_quality": 90}),
    "JPEG q75": ("yolo_jpeg", {"send": "jpeg", "jpeg_quality": 75}),
    "uint8 frame, shared memory": ("yolo_uint8", {"send": "uint8", "shared_memory": "system"}),
}
PREPROCESS_STEP = {"yolo_uint8": "preprocess_uint8", "yolo_jpeg": "preprocess_jpeg"}


def send_level(server: TritonServer, onnx: Path, frames: int, rounds: int) -> dict:
    """What the daemon sends over the socket (shared_memory: none unless named): the float tensor preprocessed
    here, or the letterboxed uint8 frame / a JPEG of it preprocessed by the example repository's ensembles, with
    and without gRPC compression. Per frame: the daemon's path (input stage write + infer), the server's compute
    of the network and of its preprocessing step (Triton statistics), overhead = client latency - the network's
    compute, and the bytes that crossed the TCP connection each way (counted by a relay, in a separate pass)."""
    from edgeinfer.preprocess import PreprocessConfig
    from support.tcp_proxy import PausableLink

    cap = cv2.VideoCapture(str(VIDEO))
    images = [cap.read()[1] for _ in range(8)]
    cap.release()
    config = PreprocessConfig(resize="letterbox", color="rgb", scale=1 / 255)

    def make(url: str, model: str, extra: dict):
        backend = create_backend("bench", "triton", onnx, {"url": url, "model_name": model, "deadline_ms": 10_000,
                                                           "shared_memory": "none", **extra})
        backend.activate()
        backend.open_input_stage(backend.preprocess_config(config), batch=1, fixed_batch=False)
        return backend

    def run(backend, n: int, times: list[float] | None = None) -> None:
        stage = backend.input_stage
        for i in range(n):
            t0 = time.perf_counter()
            stage.write(0, 0, images[i % len(images)])
            backend.infer(stage.feeds(0, 1))
            if times is not None:
                times.append(time.perf_counter() - t0)

    wire: dict[str, tuple[float, float]] = {}
    sample = 10
    for label, (model, extra) in SEND_VARIANTS.items():
        if extra.get("shared_memory") == "system":
            continue
        link = PausableLink(server.grpc_port)
        backend = make(link.url, model, extra)
        try:
            run(backend, 2)  # the channel's setup (HTTP/2 settings, metadata) before counting
            up0, down0 = link.bytes_up, link.bytes_down
            run(backend, sample)
            wire[label] = ((link.bytes_up - up0) / sample, (link.bytes_down - down0) / sample)
        finally:
            backend.deactivate()
            link.close()

    backends = {label: (model, make(server.grpc_url, model, extra)) for label, (model, extra) in
                SEND_VARIANTS.items()}
    times: dict[str, list[float]] = {k: [] for k in backends}
    stats: dict[str, list[tuple[dict, dict]]] = {k: [] for k in backends}
    try:
        for _ in range(rounds):
            for label, (model, backend) in backends.items():
                step = PREPROCESS_STEP.get(model)
                before = server_stats(server.grpc_url, "yolo"), server_stats(server.grpc_url, step) if step else {}
                run(backend, frames // rounds, times[label])
                after = server_stats(server.grpc_url, "yolo"), server_stats(server.grpc_url, step) if step else {}
                stats[label].append((stats_delta(before[0], after[0]), stats_delta(before[1], after[1])))
    finally:
        for _, backend in backends.values():
            backend.deactivate()
    result = {}
    for label, t in times.items():
        row = summary(t)
        network = statistics.mean(d["compute_infer"] for d, _ in stats[label] if "compute_infer" in d)
        steps = [p["compute_infer"] for _, p in stats[label] if "compute_infer" in p]
        row.update(network_compute_ms=round(network, 3),
                   server_preprocess_ms=round(statistics.mean(steps), 3) if steps else 0.0,
                   overhead_ms=round(row["median_ms"] - network, 2))
        up, down = wire.get(label, (0.0, 0.0))
        row.update(bytes_up=round(up), bytes_down=round(down))
        result[label] = row
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
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        # the transport alone: a model with the demo's input and output sizes that computes almost nothing
        null = constant_detector(Path(tmp) / "null.onnx", np.zeros((2535, 85), np.float32), size=416)
        # two model instances, as a server configured for several clients would be (instance_group count 2):
        # requests in flight can then be served at once
        null_server = TritonServer(null, Path(tmp) / "null.log", name="null", instances=2).start()
        try:
            transport = backend_level(null_server, args.frames, args.rounds, args.threads, null, "null")
            wire = transport_level(null_server, null, "null", args.frames, args.rounds)
            inflight_null = pipelining_level(null_server, null, "null", args.frames, args.rounds)
        finally:
            null_server.stop()
        # the example repository (examples/triton): preprocessing steps + the null network as ensembles
        ensemble = TritonServer(null, Path(tmp) / "ensemble.log", name="yolo_jpeg", repository=EXAMPLE_REPOSITORY,
                                threads=1).start()
        try:
            sent = send_level(ensemble, null, args.frames, args.rounds)
        finally:
            ensemble.stop()
        server = TritonServer(ONNX, Path(tmp) / "triton.log", threads=args.threads, instances=2).start()
        try:
            backend = backend_level(server, args.frames, args.rounds, args.threads)
            pipeline = pipeline_level(server, args.frames, args.threads)
        finally:
            server.stop()
        # requests in flight need somewhere to run at once: one model instance per core, one intra-op thread each
        # (with ONNX Runtime's default, one request already takes every core)
        cores = os.cpu_count() or 1
        server = TritonServer(ONNX, Path(tmp) / "inflight.log", threads=1, instances=cores).start()
        try:
            inflight_real = pipelining_level(server, ONNX, "yolo", args.frames, args.rounds)
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
    print("\nwhat is sent over TCP (gRPC; the example repository's ensembles, null network; a 640x272 frame "
          "letterboxed to 416x416): bytes per frame counted on the connection, client latency including the "
          "daemon's preprocessing and JPEG encode, the server's compute of the network and of its preprocessing "
          "step, overhead = client - network compute")
    print(f"{'variant':<28}{'bytes up':>10}{'bytes down':>11}{'client med':>11}{'p95':>8}{'network':>9}"
          f"{'server prep':>12}{'overhead':>10}")
    for key, r in sent.items():
        print(f"{key:<28}{r['bytes_up'] or '-':>10}{r['bytes_down'] or '-':>11}{r['median_ms']:>11}{r['p95_ms']:>8}"
              f"{r['network_compute_ms']:>9}{r['server_preprocess_ms']:>12}{r['overhead_ms']:>10}")
    print("\nper-frame overhead over the server's own compute (null model; Triton statistics: compute_infer)")
    print(f"{'variant':<22}{'client med ms':>14}{'server infer':>13}{'server total':>13}{'overhead ms':>12}"
          f"{'wire bytes':>12}{'fps':>8}")
    for key, r in wire.items():
        print(f"{key:<22}{r['median_ms']:>14}{r['server_compute_infer_ms']:>13}{r['server_success_ms']:>13}"
              f"{r['overhead_ms']:>12}{r['wire_bytes']:>12}{r['fps']:>8}")
    for label, table in (("null model", inflight_null), ("demo yolov3-tiny", inflight_real)):
        print(f"\nrequests in flight, gRPC, {label}: preprocess a 640x272 frame into a free set, submit, wait")
        print(f"{'variant':<26}{'fps':>8}{'range':>16}{'x 1 in flight':>15}{'client CPU':>12}{'server CPU':>12}"
              f"{'CPU ceiling':>13}")
        for key, r in table.items():
            one = table[key.rsplit(" ", 3)[0] + " 1 in flight"]["fps"]
            print(f"{key:<26}{r['fps']:>8}{r['fps_min']:>8}-{r['fps_max']:<7}{r['fps'] / one:>15.2f}"
                  f"{r['client_cpu_ms']:>9} ms{r['server_cpu_ms']:>9} ms{r['cpu_ceiling_fps']:>9} fps")
    print(f"(CPU ms per frame; ceiling = {os.cpu_count()} cores / (client + server CPU per frame): no number in flight "
          "gets past it on this machine)")
    analyzer = shutil.which("perf_analyzer") or next(
        (str(p) for p in Path(sys.executable).parent.glob("perf_analyzer")), None)
    print("\nperf_analyzer: " + (f"found at {analyzer} (not run by this benchmark)" if analyzer else
          "not installed: tritonclient's wheel (2.73) does not ship it, and PyPI's `perf-analyzer` as offered here "
          "is a 2 kB placeholder (0.1.0, no binary): no comparison"))
    print(f"\nedgeinfer run, demo video in file order, {args.frames} frames")
    print(f"{'variant':<26}{'fps':>7}{'infer med':>11}{'infer p95':>11}{'fps / local':>13}{'errors':>8}")
    for name, r in pipeline.items():
        print(f"{name:<26}{r['fps']:>7}{r['infer_ms_median']:>11}{r['infer_ms_p95']:>11}"
              f"{r['fps'] / local_p['fps']:>13.2f}{r['errors']:>8}")
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} on {os.cpu_count()} "
          "CPUs (a shared machine: compare within a run)")
    if args.json:
        args.json.write_text(json.dumps({"backend": backend, "transport": transport, "pipeline": pipeline,
                                         "overhead": wire, "in_flight_null": inflight_null,
                                         "in_flight_demo": inflight_real, "send": sent,
                                         "frames": args.frames, "threads": args.threads}, indent=2))


if __name__ == "__main__":
    main()
