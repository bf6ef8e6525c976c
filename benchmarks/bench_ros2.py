"""ROS 2 costs, measured side by side in one run over real DDS (Fast DDS, ROS 2 Kilted wheels; `make ros`
first). Not a test: it prints a table and, with --json, writes the numbers.

    python benchmarks/bench_ros2.py [--frames 2000] [--images 40] [--json out/bench_ros2.json]

1. Publish cost per frame: `Ros2Output.publish` (Detection2DArray built and handed to DDS, a
   subscriber matched in another process) beside `JsonlOutput.publish` (the JSON line to a file) for
   the same results with 0, 5, 20 and 100 detections.
2. Annotated 640x480 images: drawing plus publishing one image (raw bgr8 and JPEG), hence the highest rate
   the output can sustain, with a subscriber in another process.
3. Latency from a source image's header stamp to its detections arriving in another process, beside the
   same daemon's JSONL age (capture stamp -> line written) for the same frames: the daemon runs with a ros2
   source, a jsonl and a ros2 output; the peer publishes 640x480 images and subscribes to the detections.

Parts 1 and 2 run in a child process (rclpy re-executes the interpreter it is imported into).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.ros import RosPeer, ros_env, ros_unavailable  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# -- 1 and 2: in a child process with rclpy ---------------------------------------------------------------
def inner(frames: int, images: int, labels: Path, video: Path) -> dict:
    import cv2

    from edgeinfer.decoders import load_labels
    from edgeinfer.frame import Frame
    from edgeinfer.outputs.jsonl import JsonlOutput
    from edgeinfer.outputs.schema import JsonlOutputConfig
    from edgeinfer.results import Detection, Detections, Result
    from edgeinfer.runtime import ModelInfo, RuntimeContext
    from edgeinfer.transports.ros.output import Ros2Output, Ros2OutputConfig
    from edgeinfer.transports.ros.runtime import RosRuntime
    from edgeinfer.transports.ros.schema import RosConfig

    names = load_labels(labels)
    runtime = RosRuntime(RosConfig(node_name="edgeinfer_bench", lifecycle="off"))
    runtime.start()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ros = Ros2Output(Ros2OutputConfig(image={"enabled": True, "format": "raw", "rate_hz": 120},
                                          heartbeat=False, diagnostics=False), "ros2")
        ctx = RuntimeContext(catalogue={"bench": ModelInfo("bench", names)}, ros_factory=lambda: runtime)
        ros.open(ctx)
        jsonl = JsonlOutput(JsonlOutputConfig(path=str(Path(tmp) / "out.jsonl")), "jsonl")
        jsonl.open(ctx)
        peer = RosPeer({"subscribe": [
            {"name": "det", "topic": "/edgeinfer_bench/bench/detections", "type": "vision_msgs/msg/Detection2DArray",
             "qos": {"depth": 100}},
            {"name": "img", "topic": "/edgeinfer_bench/bench/annotated", "type": "sensor_msgs/msg/Image",
             "qos": {"reliability": "best_effort", "depth": 5}},
            {"name": "jpeg", "topic": "/edgeinfer_bench/bench/annotated/compressed",
             "type": "sensor_msgs/msg/CompressedImage", "qos": {"reliability": "best_effort", "depth": 5}}]},
            Path(tmp) / "peer.log")
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage

        jpeg_pub = runtime.node.create_publisher(CompressedImage, "/edgeinfer_bench/bench/annotated/compressed",
                                                 qos_profile_sensor_data)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (ros._topics["bench"].detections.get_subscription_count() < 1
                                               or ros._topics["bench"].image.get_subscription_count() < 1
                                               or jpeg_pub.get_subscription_count() < 1):
            time.sleep(0.05)
        cap = cv2.VideoCapture(str(video))
        ok, image = cap.read()
        cap.release()
        image = cv2.resize(image, (640, 480))
        frame = Frame("cam", 0, image, time.monotonic(), time.time(), "camera")
        rng = np.random.default_rng(0)
        ros.config = ros.config.model_copy(update={"image": ros.config.image.model_copy(update={"enabled": False})})
        topics = ros._topics["bench"]
        image_pub, topics.image = topics.image, None  # part 1: detections only
        for n in (0, 5, 20, 100):
            dets = [Detection(int(c), names[int(c)], float(s), (float(x), float(y), float(x) + 50, float(y) + 40))
                    for c, s, x, y in zip(rng.integers(0, 80, n), rng.random(n), rng.random(n) * 500,
                                          rng.random(n) * 400)]
            result = Result.for_frame("bench", frame, "ok", Detections(dets), age_ms=1.0, infer_ms=1.0)
            row = {}
            for name, output in (("ros2", ros), ("jsonl", jsonl)):
                times = []
                for _ in range(frames):
                    t0 = time.perf_counter()
                    output.publish(result)
                    times.append((time.perf_counter() - t0) * 1e6)
                row[name] = {"median_us": statistics.median(times), "p95_us": pct(times, 95)}
            out[f"publish_{n}_detections"] = row
        topics.image = image_pub
        dets = [Detection(2, "car", 0.9, (100.0 + 60 * i, 100.0, 150.0 + 60 * i, 160.0)) for i in range(5)]
        result = Result.for_frame("bench", frame, "ok", Detections(dets), age_ms=1.0, infer_ms=1.0)
        for fmt in ("raw", "jpeg"):
            ros.config = ros.config.model_copy(update={"image": ros.config.image.model_copy(update={"format": fmt})})
            times = []
            for _ in range(images):
                t0 = time.perf_counter()
                (image_pub if fmt == "raw" else jpeg_pub).publish(ros.annotated(result))
                times.append((time.perf_counter() - t0) * 1e3)
            out[f"annotated_640x480_{fmt}"] = {"median_ms": statistics.median(times), "p95_ms": pct(times, 95),
                                               "max_rate_hz": 1e3 / statistics.median(times)}
        time.sleep(1.0)
        out["peer_received"] = {"detections": len(peer.messages("det")), "images": len(peer.messages("img")),
                                "jpeg": len(peer.messages("jpeg"))}
        peer.stop()
        ros.close()
        jsonl.close()
    runtime.close()
    return out


# -- 3: latency through a running daemon ----------------------------------------------------------------------
def latency(images: int, fps: float, model: Path, labels: Path, video: Path, source_qos: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = tmp / "out.jsonl"
        config = {
            "sources": [{"id": "cam", "type": "ros2", "topic": "/bench/image_raw",
                         "qos": {"preset": source_qos, "depth": 1}}],
            "models": [{"id": "yolo", "path": str(model), "labels": str(labels), "sources": ["cam"],
                        "budget_ms": 30000,
                        "preprocess": {"resize": "stretch", "color": "rgb", "scale": 1 / 255},
                        "decoder": {"type": "yolo", "layout": "v5"}}],
            "outputs": [{"type": "jsonl", "path": str(out), "heartbeat": False}, {"type": "ros2"}],
        }
        (tmp / "config.yaml").write_text(yaml.safe_dump(config))
        peer = RosPeer({"subscribe": [{"name": "det", "topic": "/edgeinfer/yolo/detections",
                                       "type": "vision_msgs/msg/Detection2DArray", "qos": {"depth": 100}}],
                        "publish_images": [{"topic": "/bench/image_raw", "video": str(video), "frames": 50,
                                            "count": images, "fps": fps, "size": [640, 480],
                                            "qos": {"reliability": "reliable"}, "wait_subscribers_s": 60}]},
                       tmp / "peer.log")
        log = (tmp / "daemon.log").open("w")
        daemon = subprocess.Popen([sys.executable, "-m", "edgeinfer", "run", str(tmp / "config.yaml")],
                                  env=ros_env(), stdout=subprocess.DEVNULL, stderr=log)
        try:
            peer.wait_for(lambda ev: any(e["event"] == "published_all" for e in ev), images / fps + 120,
                          "every image published")
            time.sleep(3.0)
        finally:
            daemon.terminate()
            daemon.wait(15)
            log.close()
            peer.stop()
        records = {round(r["stamp"], 6): r for r in map(json.loads, out.read_text().splitlines())
                   if r["type"] == "detections"}
        ros_ms, jsonl_ms, transport_ms = [], [], []
        for event in peer.messages("det"):
            stamp = event["msg"]["header"]["stamp"]
            s = stamp["sec"] + stamp["nanosec"] * 1e-9
            ros_ms.append((event["t"] - s) * 1e3)
            record = records.get(round(s, 6))
            if record is not None:
                jsonl_ms.append(record["age_ms"])
                transport_ms.append(ros_ms[-1] - record["age_ms"])
        published = len([e for e in peer.snapshot() if e["event"] == "published"])
        infer = [r["infer_ms"] for r in records.values()]
        return {"images_published": published, "detections_received": len(ros_ms),
                "infer_ms_median": statistics.median(infer),
                "ros_stamp_to_arrival_ms": {"median": statistics.median(ros_ms), "p95": pct(ros_ms, 95)},
                "jsonl_age_ms": {"median": statistics.median(jsonl_ms), "p95": pct(jsonl_ms, 95)},
                "ros_minus_jsonl_ms": {"median": statistics.median(transport_ms), "p95": pct(transport_ms, 95)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="publishes per detection count (part 1)")
    parser.add_argument("--images", type=int, default=100, help="annotated images per format (part 2)")
    parser.add_argument("--fps", type=float, default=5.0, help="rate of the source images (part 3)")
    parser.add_argument("--latency-images", type=int, default=60, help="source images (part 3)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from edgeinfer.zoo import fetch_media, fetch_model

    files = fetch_model("yolov3-tiny", ROOT / "models")
    video = fetch_media("bikes", ROOT / "models")
    if args.inner:
        import os

        import support.ros

        support.ros.DOMAIN_ID = os.environ["ROS_DOMAIN_ID"]  # the peer joins this process's domain, not its own
        print(json.dumps(inner(args.frames, args.images, files.labels, video)))
        return 0
    why = ros_unavailable()
    if why:
        print(f"bench_ros2: {why}", file=sys.stderr)
        return 1
    proc = subprocess.run([sys.executable, __file__, "--inner", "--frames", str(args.frames), "--images",
                           str(args.images)], env=ros_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # best effort and reliable subscriptions on the source (default: reliable); the camera publishes reliable
    for qos in ("sensor_data", "default"):
        result[f"latency_source_{qos}"] = latency(args.latency_images, args.fps, files.onnx, files.labels, video,
                                                  qos)

    print("publish cost per frame (median / p95, microseconds)")
    print(f"{'detections':>10} | {'ros2 Detection2DArray':>22} | {'jsonl line':>14} | ratio")
    for n in (0, 5, 20, 100):
        row = result[f"publish_{n}_detections"]
        r, j = row["ros2"], row["jsonl"]
        print(f"{n:>10} | {r['median_us']:>9.1f} / {r['p95_us']:>8.1f} | {j['median_us']:>6.1f} / "
              f"{j['p95_us']:>6.1f} | {r['median_us'] / j['median_us']:.2f}")
    for fmt in ("raw", "jpeg"):
        a = result[f"annotated_640x480_{fmt}"]
        print(f"annotated 640x480 {fmt:>4}: {a['median_ms']:.2f} ms (p95 {a['p95_ms']:.2f}) per image, "
              f"up to {a['max_rate_hz']:.0f} images/s")
    for qos in ("sensor_data", "default"):
        lat = result[f"latency_source_{qos}"]
        arrival, age, extra = lat["ros_stamp_to_arrival_ms"], lat["jsonl_age_ms"], lat["ros_minus_jsonl_ms"]
        print(f"source qos {qos}: {lat['detections_received']} of {lat['images_published']} 640x480 images came back "
              f"as detections (inference {lat['infer_ms_median']:.0f} ms median); stamp -> detections in another "
              f"process {arrival['median']:.1f} ms median (p95 {arrival['p95']:.1f}); same frames' JSONL age "
              f"{age['median']:.1f} ms (p95 {age['p95']:.1f}); ROS minus JSONL {extra['median']:.2f} ms "
              f"(p95 {extra['p95']:.2f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
