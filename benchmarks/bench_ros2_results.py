"""Cost per frame of publishing classifier and dense-map results on ROS 2, side by side in one run over real
DDS (Fast DDS, ROS 2 Kilted wheels; `make ros` first), a subscriber matched in another process. Not a test:
it prints a table and, with --json, writes the numbers.

    python benchmarks/bench_ros2_results.py [--frames 300] [--size 640x480] [--json out/bench_ros2_results.json]

Rows, each the median and p95 of `publish` for the same Result:
- classifications (top-5): Ros2Output (vision_msgs/Classification) beside JsonlOutput (the JSON line);
- dense saliency (32FC1) and segmentation (mono8) at the source size: Ros2Output (the full map as
  sensor_msgs/Image) beside JsonlOutput (the summary only), and beside the same message filled from
  an array('B') copy of the map (the alternative to the bytes payload the output uses).

Runs in a child process (rclpy re-executes the interpreter it is imported into).
"""

from __future__ import annotations

import argparse
import array
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.ros import RosPeer, ros_env, ros_unavailable  # noqa: E402


def timed(fn, frames: int) -> dict:
    """Median and p95 of fn() in microseconds; failed calls (a publish DDS refused) counted, not timed."""
    times, failed, last_error = [], 0, ""
    for i in range(frames + 1):
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # counted: the daemon's worker counts such a publish as an output error
            failed, last_error = failed + 1, str(exc)[:120]
            continue
        if i:  # the first call creates pooled messages
            times.append((time.perf_counter() - t0) * 1e6)
    return {"median_us": statistics.median(times) if times else float("nan"),
            "p95_us": float(np.percentile(times, 95)) if times else float("nan"), "failed": failed,
            **({"last_error": last_error} if failed else {})}


def inner(frames: int, width: int, height: int) -> dict:
    import support.ros
    from edgeinfer.frame import Frame
    from edgeinfer.outputs.jsonl import JsonlOutput
    from edgeinfer.outputs.schema import JsonlOutputConfig
    from edgeinfer.results import Classification, Classifications, DenseMap, Result
    from edgeinfer.runtime import ModelInfo, RuntimeContext
    from edgeinfer.transports.ros import convert as cv
    from edgeinfer.transports.ros.output import Ros2Output, Ros2OutputConfig
    from edgeinfer.transports.ros.runtime import RosRuntime
    from edgeinfer.transports.ros.schema import RosConfig

    support.ros.DOMAIN_ID = os.environ["ROS_DOMAIN_ID"]  # the peer joins this process's domain, not its own
    runtime = RosRuntime(RosConfig(node_name="edgeinfer_bench", lifecycle="off"))
    runtime.start()
    out: dict = {"size": f"{width}x{height}"}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ros = Ros2Output(Ros2OutputConfig(heartbeat=False, diagnostics=False), "ros2")
        ctx = RuntimeContext(catalogue={"cls": ModelInfo("cls", payload_type=Classifications),
                                        "sal": ModelInfo("sal", payload_type=DenseMap),
                                        "seg": ModelInfo("seg", payload_type=DenseMap)}, ros_factory=lambda: runtime)
        ros.open(ctx)
        jsonl = JsonlOutput(JsonlOutputConfig(path=str(Path(tmp) / "out.jsonl")), "jsonl")
        jsonl.open(ctx)
        qos = {"depth": 10}
        peer = RosPeer({"subscribe": [
            {"name": "cls", "topic": "/edgeinfer_bench/cls/classifications",
             "type": "vision_msgs/msg/Classification", "qos": qos},
            {"name": "sal", "topic": "/edgeinfer_bench/sal/dense", "type": "sensor_msgs/msg/Image", "qos": qos},
            {"name": "seg", "topic": "/edgeinfer_bench/seg/dense", "type": "sensor_msgs/msg/Image", "qos": qos}]},
            Path(tmp) / "peer.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(t.results.get_subscription_count() < 1
                                                  for t in ros._topics.values()):
            time.sleep(0.05)
        frame = Frame("cam", 0, np.zeros((height, width, 3), np.uint8), time.monotonic(), time.time(), "camera")
        ranked = [Classification(i, f"class_{i}", 0.5 / (i + 1)) for i in range(5)]
        cls = Result.for_frame("cls", frame, "ok", Classifications(ranked), age_ms=1.0)
        out["classifications_top5"] = {"ros2": timed(lambda: ros.publish(cls), frames),
                                       "jsonl": timed(lambda: jsonl.publish(cls), frames)}
        maps = {"sal": DenseMap("saliency", rng.random((height, width), dtype=np.float32),
                                {"peak": 1.0, "peak_xy": [1, 2], "min": 0.0, "min_xy": [0, 0], "mean": 0.5}),
                "seg": DenseMap("segmentation", rng.integers(0, 21, (height, width), dtype=np.uint8),
                                {"classes": [{"class_id": 0, "label": "a", "share": 1.0}]})}
        for model, dense in maps.items():
            result = Result.for_frame(model, frame, "ok", dense, age_ms=1.0)
            topics = ros._topics[model]

            def from_array(result=result, topics=topics):  # the alternative payload: array('B')
                msg = topics.array
                h, w, encoding, big, step, data = cv.dense_image_fields(result.dense.task, result.dense.map)
                msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = h, w, encoding, big, step
                payload = array.array("B")
                payload.frombytes(data)
                msg.data = payload
                topics.results.publish(msg)

            out[f"dense_{dense.task}"] = {
                "ros2": timed(lambda result=result: ros.publish(result), frames),
                "ros2_array_payload": timed(from_array, max(10, frames // 10)),
                "jsonl_summary": timed(lambda result=result: jsonl.publish(result), frames)}
        time.sleep(1.0)
        out["peer_received"] = {name: len(peer.messages(name)) for name in ("cls", "sal", "seg")}
        peer.stop()
        ros.close()
        jsonl.close()
    runtime.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.inner:
        print(json.dumps(inner(args.frames, width, height)))
        return 0
    why = ros_unavailable()
    if why:
        print(f"skipped: {why}", file=sys.stderr)
        return 1
    proc = subprocess.run([sys.executable, __file__, "--inner", "--frames", str(args.frames), "--size", args.size],
                          env=ros_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"publish_result per frame, {result['size']} maps (median / p95, microseconds)")
    for key, row in result.items():
        if not isinstance(row, dict) or key == "peer_received":
            continue
        cells = "  ".join(f"{name} {v['median_us']:9.1f} / {v['p95_us']:9.1f}" + (
            f" ({v['failed']} failed: {v['last_error']})" if v["failed"] else "") for name, v in row.items())
        print(f"  {key:24s} {cells}")
    print(f"  received by the peer: {result['peer_received']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
