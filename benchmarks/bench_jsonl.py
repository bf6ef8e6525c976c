"""JSONL record writes: the whole-record `os.write` path beside the buffered write + flush it replaced.

    python benchmarks/bench_jsonl.py [--records 20000] [--rounds 5]

Both write the same demo-sized detection records (three boxes, ~330 bytes) to a file, one flush per record
as before (a pipe must see each line at once); rounds alternate so machine noise hits both alike. The new
path also truncates a short write (disk full) away, which costs nothing when writes succeed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from edgeinfer.outputs.jsonl import JsonlOutput
from edgeinfer.outputs.schema import JsonlOutputConfig
from edgeinfer.runtime import RuntimeContext

RECORD = {"type": "detections", "source": "bikes", "frame": 140, "stamp": 1795774033.205601, "age_ms": 167.98,
          "model": "yolov3-tiny", "status": "ok", "infer_ms": 30.43, "detections": [
              {"class_id": 2, "label": "car", "score": 0.7228, "bbox": [312.3, 115.8, 430.0, 158.6]},
              {"class_id": 2, "label": "car", "score": 0.3843, "bbox": [510.7, 112.2, 624.0, 168.8]},
              {"class_id": 2, "label": "car", "score": 0.2591, "bbox": [336.3, 130.3, 382.8, 147.1]}]}


def buffered(path: Path, n: int) -> float:
    """The previous JsonlOutput: text file opened for append, write + flush per record."""
    t0 = time.perf_counter()
    with path.open("a", encoding="utf-8") as stream:
        for _ in range(n):
            stream.write(json.dumps(RECORD, separators=(",", ":")) + "\n")
            stream.flush()
    return time.perf_counter() - t0


def whole_record(path: Path, n: int) -> float:
    output = JsonlOutput(JsonlOutputConfig(path=str(path)), "jsonl")
    output.open(RuntimeContext())
    t0 = time.perf_counter()
    for _ in range(n):
        output.write_record(RECORD)
    elapsed = time.perf_counter() - t0
    output.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"buffered write + flush (before)": [], "whole-record os.write (now)": []}
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.rounds):
            for name, run in zip(rates, (buffered, whole_record)):
                path = Path(folder) / f"{i}-{len(rates[name])}-{run.__name__}.jsonl"
                rates[name].append(args.records / run(path, args.records))
    print(f"{args.records} records x {args.rounds} rounds, alternated")
    print("| path | records/s (median) | min – max |")
    print("| --- | --- | --- |")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} – {max(values):,.0f} |")
    before, now = (statistics.median(v) for v in rates.values())
    print(f"ratio now / before: {now / before:.2f}")


if __name__ == "__main__":
    main()
