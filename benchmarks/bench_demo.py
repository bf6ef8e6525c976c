"""The demo run beside a bare ONNX Runtime loop, in one process run, on this machine.

    python benchmarks/bench_demo.py [--frames 250] [--json out.json]

1. `edgeinfer run configs/demo.yaml` as a user runs it (a child process): fps over the whole run (start-up
   excluded: from the first record to the last), per-frame age (capture -> publish) and inference time.
   Every frame in file order, so the age includes the time a frame queues for the model.
1b. The same with `realtime: true` (paced at the file's 25 fps, newest frame wins): the age a live camera's
   frames would have, and how many frames such a source would drop on this machine.
2. A bare `session.run` loop on one preprocessed frame of the same video, same session options, same
   number of frames: the most this engine can give on this machine.
The ratio (pipeline fps / bare fps) is the number that says how much the daemon costs around the engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import yaml

ROOT = Path(__file__).resolve().parents[1]


def bench_config(realtime: bool, backend_options: dict) -> Path:
    """The demo config, or a variant of it written beside the models (so its relative paths still hold)."""
    config = ROOT / "configs/demo.yaml"
    if not realtime and not backend_options:
        return config
    data = yaml.safe_load(config.read_text())
    data["sources"][0].update(realtime=realtime, path="media/bikes.mp4")
    data["models"][0].update(path="yolov3-tiny/yolov3-tiny.onnx", labels="yolov3-tiny/coco.names",
                             backend_options=backend_options)
    data["outputs"][0]["heartbeat"] = False
    variant = ROOT / "models" / f"bench-{'realtime' if realtime else 'ordered'}.yaml"
    variant.write_text(yaml.safe_dump(data))
    return variant


def pipeline_run(realtime: bool = False, backend_options: dict | None = None) -> dict:
    config = bench_config(realtime, backend_options or {})
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edgeinfer", "run", str(config)],
                          capture_output=True, text=True, check=True)
    wall = time.monotonic() - t0
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    records = [r for r in records if r["type"] == "detections"]
    span = records[-1]["stamp"] - records[0]["stamp"]  # capture stamps: first to last frame
    ages = sorted(r["age_ms"] for r in records)
    return {
        "frames": len(records),
        "process_wall_s": round(wall, 2),
        "fps": round((len(records) - 1) / span, 1) if span > 0 else None,
        "age_ms_median": round(statistics.median(ages), 1),
        "age_ms_p95": round(ages[int(0.95 * (len(ages) - 1))], 1),
        "infer_ms_median": round(statistics.median(r["infer_ms"] for r in records), 2),
    }


def bare_loop(frames: int) -> dict:
    cap = cv2.VideoCapture(str(ROOT / "models/media/bikes.mp4"))
    ok, image = cap.read()
    cap.release()
    if not ok:
        raise SystemExit("cannot read the demo video: run `make models` first")
    blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (416, 416), swapRB=True, crop=False).astype(np.float32)
    session = ort.InferenceSession(str(ROOT / "models/yolov3-tiny/yolov3-tiny.onnx"),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: blob})  # warm-up, as the daemon does
    times = []
    t0 = time.perf_counter()
    for _ in range(frames):
        t = time.perf_counter()
        session.run(None, {name: blob})
        times.append((time.perf_counter() - t) * 1e3)
    elapsed = time.perf_counter() - t0
    return {"frames": frames, "fps": round(frames / elapsed, 1), "infer_ms_median": round(statistics.median(times), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--intra-op-threads", type=int, default=None,
                        help="backend_options.intra_op_threads for the pipeline runs (default: ONNX Runtime's "
                        "own choice, as in the bare loop)")
    args = parser.parse_args()
    options = {"intra_op_threads": args.intra_op_threads} if args.intra_op_threads is not None else {}
    bare_before = bare_loop(args.frames)
    pipe = pipeline_run(backend_options=options)
    live = pipeline_run(realtime=True, backend_options=options)
    bare_after = bare_loop(args.frames)  # before and after, so drift of a shared machine shows
    bare_fps = (bare_before["fps"] + bare_after["fps"]) / 2
    result = {"pipeline": pipe, "pipeline_realtime": live, "bare_before": bare_before, "bare_after": bare_after,
              "ratio_pipeline_to_bare": round(pipe["fps"] / bare_fps, 3)}
    print(f"{'':28}{'frames':>7}{'fps':>8}{'infer ms':>10}{'age ms (med/p95)':>20}")
    for label, p in (("edgeinfer run (demo)", pipe), ("edgeinfer run (realtime)", live)):
        print(f"{label:28}{p['frames']:>7}{p['fps']:>8}{p['infer_ms_median']:>10}"
              f"{p['age_ms_median']:>11}/{p['age_ms_p95']}")
    for label, b in (("bare session.run before", bare_before), ("bare session.run after", bare_after)):
        print(f"{label:28}{b['frames']:>7}{b['fps']:>8}{b['infer_ms_median']:>10}")
    print(f"ratio pipeline / bare: {result['ratio_pipeline_to_bare']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
