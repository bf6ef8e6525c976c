"""`edgeinfer bench` beside a bare `session.run` loop, alternated in one process run, on this machine.

    python benchmarks/bench_engines.py [--model models/yolov3-tiny/yolov3-tiny.onnx] [--rounds 3]
                                       [--duration 5] [--json out.json]

Each round runs `edgeinfer bench`'s measurement (`run_bench`: the backend's input stage and `submit`, as the
daemon feeds it) and then a bare loop of `session.run` on one preprocessed input with the same session
options, each for --duration seconds. Alternating rounds spreads the noise of a shared machine over both.
The ratio (bench throughput / bare throughput, median over rounds) says whether `bench` reports what the
engine gives: near 1.0 means it adds nothing measurable around the engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeinfer.engines.bench import format_table, run_bench

ROOT = Path(__file__).resolve().parents[1]


def bare_loop(model: Path, duration: float) -> dict:
    so = ort.SessionOptions()
    so.log_severity_level = 3  # as the backend sets it
    session = ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    names = [o.name for o in session.get_outputs()]
    for _ in range(5):
        session.run(names, feed)
    times = []
    t_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        session.run(names, feed)
        t1 = time.perf_counter()
        times.append((t1 - t0) * 1e3)
        if t1 - t_start >= duration:
            break
    elapsed = time.perf_counter() - t_start
    return {"iterations": len(times), "throughput_ips": len(times) / elapsed,
            "p50_ms": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models/yolov3-tiny/yolov3-tiny.onnx")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rounds = []
    for r in range(args.rounds):
        bench = run_bench(args.model, "onnxruntime", "cpu", 1, args.duration)
        bare = bare_loop(args.model, args.duration)
        ratio = bench["throughput_ips"] / bare["throughput_ips"]
        rounds.append({"bench": bench, "bare": bare, "ratio": ratio})
        print(f"round {r + 1}: bench {bench['throughput_ips']:.2f} img/s (p50 {bench['latency_ms']['p50']:.1f} ms), "
              f"bare session.run {bare['throughput_ips']:.2f} img/s (p50 {bare['p50_ms']:.1f} ms), "
              f"ratio {ratio:.3f}")
    print()
    print(format_table(rounds[-1]["bench"]))
    ratios = [r["ratio"] for r in rounds]
    print(f"\nbench / bare session.run throughput: median {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)})")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "median_ratio": statistics.median(ratios)}, indent=2))


if __name__ == "__main__":
    main()
