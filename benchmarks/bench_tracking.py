"""Multi-object tracking: cost per frame, accuracy on real trajectories, and the demo video with tracking on.

    python benchmarks/bench_tracking.py [--frames 300] [--seeds 8] [--json out.json] [--skip-demo]

1. Cost: 50 objects moving through a 1920x1080 frame (5 % missed, jittered boxes) for --frames frames; the
   time of one `update` per frame, edgeinfer's ByteTrack beside the plain IoU tracker and, when the `trackers`
   package (Roboflow; ByteTrack on supervision) is importable, its ByteTrackTracker; rounds alternate.
2. Accuracy: motmetrics' TUD-Campus and TUD-Stadtmitte ground truth through the simulated detector
   (tests/support/mot_sim.py) at 10 % and 30 % missed, seeds 0..--seeds-1: IDF1, ID switches, MOTA per tracker.
3. The demo (configs/demo.yaml: yolov3-tiny on bikes.mp4, every frame) with `tracker: {type: bytetrack}`:
   distinct track ids per class and the longest track; --segment-demo: the same with YOLOv5s-seg.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from edgeinfer.tracking.bytetrack import ByteTracker  # noqa: E402
from support.mot_sim import SEQUENCES, DetectorModel, bytetrack_runner, iou_runner, score_sequence  # noqa: E402


def moving_scene(objects: int, frames: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    size = rng.uniform(30, 120, (objects, 2))
    position = rng.uniform(0, 1, (objects, 2)) * (np.array([1920, 1080]) - size)
    velocity = rng.normal(0, 4, (objects, 2))
    classes = rng.integers(0, 3, objects)
    scene = []
    for _ in range(frames):
        position = position + velocity
        bounce = (position < 0) | (position + size > [1920, 1080])
        velocity[bounce] *= -1
        seen = rng.random(objects) >= 0.05
        xy = position[seen] + rng.normal(0, 0.05, (seen.sum(), 2)) * size[seen]
        boxes = np.concatenate([xy, xy + size[seen]], axis=1)
        scene.append((boxes, rng.uniform(0.3, 1.0, seen.sum()), classes[seen]))
    return scene


def trackers_runner():
    """Roboflow `trackers` ByteTrackTracker as a runner, or None when it is not importable."""
    try:
        import supervision as sv
        from trackers import ByteTrackTracker
    except ImportError:
        return None

    def make():
        tracker = ByteTrackTracker()

        def run(boxes, scores, class_ids=None):
            class_ids = np.zeros(len(boxes), int) if class_ids is None else class_ids
            out = tracker.update(sv.Detections(xyxy=boxes.astype(np.float32), confidence=scores.astype(np.float32),
                                               class_id=class_ids))
            ids = np.zeros(len(boxes), np.int64)
            for box, track_id in zip(out.xyxy, out.tracker_id, strict=True):
                if track_id is not None and track_id >= 0:
                    ids[np.argmin(np.abs(boxes - box).sum(axis=1))] = track_id + 1
            return ids
        return run
    return make


def cost(frames: int, rounds: int) -> dict[str, dict[str, float]]:
    scene = moving_scene(50, frames)
    contenders = {"edgeinfer bytetrack": lambda: ByteTracker().update,
                  "iou baseline": lambda: (lambda t: lambda b, s, c: t(b, s))(iou_runner())}
    other = trackers_runner()
    if other is not None:
        contenders["trackers ByteTrackTracker"] = other
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for name, make in contenders.items():
            update = make()
            for boxes, scores, class_ids in scene:
                t0 = time.perf_counter()
                update(boxes, scores, class_ids)
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: {"median_ms": statistics.median(t), "p95_ms": float(np.percentile(t, 95)),
                   "mean_ms": statistics.fmean(t)} for name, t in times.items()}


def accuracy(seeds: int) -> list[dict]:
    runners = {"edgeinfer bytetrack": bytetrack_runner, "iou baseline": iou_runner}
    other = trackers_runner()
    if other is not None:
        runners["trackers ByteTrackTracker"] = other
    rows = []
    for miss in (0.10, 0.30):
        for sequence in SEQUENCES:
            for name, make in runners.items():
                scores = [score_sequence(sequence, make(), DetectorModel(miss_rate=miss, seed=seed))
                          for seed in range(seeds)]
                rows.append({"miss": miss, "sequence": sequence, "tracker": name,
                             "idf1_seed0": scores[0]["idf1"], "switches_seed0": scores[0]["num_switches"],
                             "idf1_mean": statistics.fmean(s["idf1"] for s in scores),
                             "idf1_min": min(s["idf1"] for s in scores),
                             "switches_mean": statistics.fmean(s["num_switches"] for s in scores),
                             "mota_mean": statistics.fmean(s["mota"] for s in scores)})
    return rows


def demo(segment: bool = False) -> dict:
    """The demo config with tracking on; `segment`: YOLOv5s-seg (a stronger detector, with masks) instead of
    yolov3-tiny."""
    import yaml

    from edgeinfer.preflight import load_config
    from support.pipeline_run import run_pipeline
    from support.yolov5_seg import fetch_yolov5s_seg

    raw = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    raw["models"][0]["tracker"] = {"type": "bytetrack"}
    if segment:
        model = raw["models"][0]
        model.update(id="yolov5s-seg", path=str(fetch_yolov5s_seg(ROOT / "models")), budget_ms=60000)
        for key in ("labels", "preprocess", "decoder"):
            model.pop(key, None)
    with tempfile.TemporaryDirectory() as tmp:
        records_path = Path(tmp) / "records.jsonl"
        raw["outputs"] = [{"type": "jsonl", "path": str(records_path), "heartbeat": False}]
        for model in raw["models"]:
            for key in ("path", "labels"):
                if key in model:
                    model[key] = str((ROOT / "configs" / model[key]).resolve())
        raw["sources"][0]["path"] = str((ROOT / "configs" / raw["sources"][0]["path"]).resolve())
        config_path = Path(tmp) / "demo.yaml"
        config_path.write_text(yaml.safe_dump(raw))
        run_pipeline(load_config(config_path), timeout=600)
        records = [json.loads(line) for line in records_path.read_text().splitlines()]
    frames_of: dict[int, list[int]] = defaultdict(list)
    label_of: dict[int, str] = {}
    detections = 0
    for record in records:
        for d in record["detections"]:
            frames_of[d["track_id"]].append(record["frame"])
            label_of[d["track_id"]] = d["label"]
            detections += 1
    per_class = Counter(label_of.values())
    longest = max(frames_of, key=lambda t: len(frames_of[t]))
    return {"frames": len(records), "published_detections": detections, "tracks": len(frames_of),
            "tracks_per_class": dict(per_class.most_common()),
            "longest_track": {"id": longest, "label": label_of[longest], "frames": len(frames_of[longest]),
                              "first": min(frames_of[longest]), "last": max(frames_of[longest])}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--segment-demo", action="store_true", help="also the demo video through YOLOv5s-seg")
    parser.add_argument("--json")
    args = parser.parse_args()
    results: dict = {"cost_50_objects": cost(args.frames, args.rounds)}
    print("cost per frame, 50 objects:")
    for name, row in results["cost_50_objects"].items():
        print(f"  {name:28s} median {row['median_ms']:.3f} ms  p95 {row['p95_ms']:.3f} ms")
    results["accuracy"] = accuracy(args.seeds)
    print(f"accuracy (motmetrics, seeds 0..{args.seeds - 1}):")
    for row in results["accuracy"]:
        print(f"  miss {row['miss']:.0%} {row['sequence']:15s} {row['tracker']:26s} IDF1 seed0 {row['idf1_seed0']:.3f}"
              f" (sw {row['switches_seed0']:.0f})  mean {row['idf1_mean']:.3f} min {row['idf1_min']:.3f}"
              f"  sw mean {row['switches_mean']:.1f}  MOTA {row['mota_mean']:.3f}")
    if not args.skip_demo:
        results["demo"] = demo()
        print("demo with tracking:", json.dumps(results["demo"]))
    if args.segment_demo:
        results["demo_segment"] = demo(segment=True)
        print("demo with tracking, YOLOv5s-seg:", json.dumps(results["demo_segment"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
