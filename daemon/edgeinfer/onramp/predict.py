"""`edgeinfer predict MODEL SOURCE`: a quick look, as `yolo predict` users expect: one run of the daemon on the
config `edgeinfer init` would write, one readable line per frame (or the JSON records with `--json`)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .init import InitError, make_config

LIVE_TYPES = ("camera", "rtsp", "gstreamer", "zmq", "ros2", "synthetic")
EXIT_CONFIG = 2

RunConfig = Callable[[argparse.Namespace], int]  # the CLI's `run` (config, max_frames, log_level) -> exit code


def predict(model: str, source: str, frames: int | None, as_json: bool, run_config: RunConfig,
            out=None, err=None) -> int:
    """Run `model` on `source` once through `run_config` (the CLI's own `run`: same start-up, signals and exit
    codes) and print what it found."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        proposal = make_config(model, source, "jsonl")
    except InitError as exc:
        print(f"edgeinfer: {exc}", file=err)
        return EXIT_CONFIG
    if proposal.problems:
        print("edgeinfer: the model does not fit any reading tried; `edgeinfer init` writes the config to edit:",
              file=err)
        for problem in proposal.problems:
            print(f"  {problem}", file=err)
        return EXIT_CONFIG
    data = yaml.safe_load(proposal.text)
    live = data["sources"][0]["type"] in LIVE_TYPES
    if frames is None and live:
        frames = 1  # a quick look at a camera or stream, not a daemon
    with tempfile.TemporaryDirectory(prefix="edgeinfer-predict-") as temp:
        records_path = Path(temp) / "records.jsonl"
        data["outputs"] = [{"type": "jsonl", "path": str(records_path)}]
        config_path = Path(temp) / "predict.yaml"
        config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        code = run_config(argparse.Namespace(config=str(config_path), max_frames=frames, log_level="WARNING"))
        records = [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
    totals: Counter = Counter()
    for record in records:
        print(json.dumps(record, separators=(",", ":")) if as_json else describe(record), file=out)
        for item in record.get("detections") or []:
            totals[item["label"]] += 1
    out.flush()
    if not as_json:
        summary = ", ".join(f"{count} {label}" for label, count in totals.most_common(8))
        print(f"{len(records)} frame(s){': ' + summary if summary else ''}", file=err)
    return code


def describe(record: dict[str, Any]) -> str:
    """One line per record: `bikes frame 140: 3 car 0.72 [312,116,430,159] ... (30.4 ms)`."""
    head = f"{record.get('source')} frame {record.get('frame')}"
    timing = f" ({record['infer_ms']:.1f} ms)" if isinstance(record.get("infer_ms"), (int, float)) else ""
    if record.get("status") not in (None, "ok"):
        return f"{head}: {record.get('status')} {record.get('error', '')}".rstrip()
    if "detections" in record:
        items = record["detections"]
        shown = ", ".join(f"{d['label']} {d['score']:.2f} [{','.join(f'{v:.0f}' for v in d['bbox'])}]"
                          for d in items[:5])
        more = f", +{len(items) - 5} more" if len(items) > 5 else ""
        return f"{head}: {len(items)} detection(s){': ' + shown if items else ''}{more}{timing}"
    if "classifications" in record:
        shown = ", ".join(f"{c['label']} {c['score']:.2f}" for c in record["classifications"])
        return f"{head}: {shown}{timing}"
    if "dense" in record:
        dense = record["dense"]
        keys = ("task", "peak", "peak_xy", "mean")
        return f"{head}: " + " ".join(f"{k}={dense[k]}" for k in keys if k in dense) + timing
    return f"{head}: {json.dumps(record, separators=(',', ':'))}"
