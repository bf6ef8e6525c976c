"""What looking costs: the demo's fps with the status page open and two live viewers, beside without, in
alternated rounds of one run on this machine.

    python benchmarks/bench_status_page.py [--phases 6] [--phase-s 6] [--rounds 3] [--frames 250] [--json out.json]

The demo is YOLOv3-tiny on bikes.mp4, every frame in file order (so it runs as fast as the model goes), run by
`edgeinfer run` in a child process, as a user runs it. Two comparisons:

1. Phases, one daemon (the number the goal is about): the demo looping with the http output configured;
   phases alternate between nobody watching and `viewed`: two live-view viewers reading the MJPEG stream as
   fast as it comes (real HTTP clients, like two browser tabs) and /api/status polled once a second (what the
   page's script does). fps per phase from the records' capture stamps in the phase's window (1 s settling
   excluded). Same process, same warm state: the ratio holds only what watching costs. Beside it the CPU the
   http output's own threads (live-view encoder, server loop) used, read from /api/status: what watching
   costs in absolute terms, whatever the load of the box.
2. Processes (what configuring the output costs, start-up included): `none` (jsonl only, the demo as it
   ships), `idle` (plus the http output, nobody connected) and `viewed`, each a fresh process per round;
   fps is (records - 1) / (last capture stamp - first); the daemon's CPU time per frame (user + system, from
   the child's rusage, start-up included) beside it.
Rounds and phases alternate so that a load change on the box hits every variant. Goal: viewed / not viewed
>= 0.95.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, variant: str, frames: int, port: int) -> Path:
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    source = data["sources"][0]
    source.update(path=str(ROOT / "models/media/bikes.mp4"), loop=frames > 250)
    model = data["models"][0]
    model.update(path=str(ROOT / "models/yolov3-tiny/yolov3-tiny.onnx"),
                 labels=str(ROOT / "models/yolov3-tiny/coco.names"))
    out = folder / f"{variant}.jsonl"
    data["outputs"] = [{"type": "jsonl", "path": str(out), "heartbeat": False}]
    if variant != "none":
        data["outputs"].append({"type": "http", "port": port})
    path = folder / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Viewer(threading.Thread):
    """Reads an MJPEG stream as fast as it comes and counts the JPEG parts."""

    def __init__(self, url: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.stop, self.parts, self.bytes = url, stop, 0, 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    while not self.stop.is_set():
                        chunk = response.read1(65536)
                        if not chunk:
                            break
                        self.bytes += len(chunk)
                        self.parts += chunk.count(b"Content-Type: image/jpeg")
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)  # not up yet, or gone at the end of the run


class StatusPoller(threading.Thread):
    def __init__(self, url: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.stop, self.polls = url, stop, 0

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    json.loads(response.read())
                self.polls += 1
            except (OSError, http.client.HTTPException, ValueError):
                pass


def start_clients(base: str, stop: threading.Event) -> list[threading.Thread]:
    clients: list[threading.Thread] = [Viewer(base + "stream/yolov3-tiny/bikes", stop) for _ in range(2)]
    clients.append(StatusPoller(base + "api/status", stop))
    for client in clients:
        client.start()
    return clients


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_cpu_s(base: str) -> float:
    """CPU seconds the http output's own threads (live-view encoder, server loop) have used so far."""
    with urllib.request.urlopen(base + "api/status", timeout=10) as response:
        return json.loads(response.read())["http"]["cpu_s"]


def publish_cost_us(results: int = 20_000) -> float:
    """CPU microseconds the http output costs the pipeline's publish thread per result (in this process, a
    real HttpOutput with its server running, nobody connected)."""
    import numpy as np

    from edgeinfer.frame import Frame
    from edgeinfer.outputs.http import HttpOutput
    from edgeinfer.outputs.schema import HttpOutputConfig
    from edgeinfer.results import Detection, Detections, Result
    from edgeinfer.runtime import ModelInfo, RuntimeContext

    output = HttpOutput(HttpOutputConfig(port=0), "http")
    output.open(RuntimeContext(catalogue={"m": ModelInfo(id="m", sources=("cam",))}))
    image = np.zeros((272, 640, 3), np.uint8)
    found = Detections([Detection(2, "car", 0.9, (10.0, 20.0, 200.0, 150.0))] * 5)
    batch = [Result.for_frame("m", Frame("cam", i, image, time.monotonic(), time.time()), "ok", found,
                              age_ms=10.0, infer_ms=5.0) for i in range(results)]
    try:
        start = time.process_time()
        for result in batch:
            output.publish(result)
        return (time.process_time() - start) / results * 1e6
    finally:
        output.close()


def run_phases(folder: Path, phases: int, phase_s: float) -> list[dict]:
    """One daemon, the demo looping; phases alternate between nobody watching and two viewers + the page."""
    port = free_port()
    config = write_config(folder, "phases", 10**9, port)
    out = folder / "phases.jsonl"
    out.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "edgeinfer", "run", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/"
    windows = []
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.stat().st_size > 10_000):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start: {proc.stderr.read()[-3000:]}")
            time.sleep(0.2)
        for index in range(phases * 2):
            viewed = (index % 4) in (1, 2)  # none, viewed, viewed, none, ...: each kind first as often
            stop = threading.Event()
            clients = start_clients(base, stop) if viewed else []
            time.sleep(1.0)  # settle: connections made, the encoder running
            t0, cpu0, http0 = time.time(), process_cpu_s(proc.pid), http_cpu_s(base)
            time.sleep(phase_s)
            t1, cpu1, http1 = time.time(), process_cpu_s(proc.pid), http_cpu_s(base)
            stop.set()
            for client in clients:
                client.join(5)
            windows.append({"viewed": viewed, "t0": t0, "t1": t1, "cpu_s": cpu1 - cpu0, "http_cpu_s": http1 - http0,
                            "viewer_frames": [c.parts for c in clients if isinstance(c, Viewer)]})
    finally:
        proc.terminate()
        proc.wait(30)
    stamps = [r["stamp"] for r in map(json.loads, out.read_text().splitlines()) if r["type"] == "detections"]
    for w in windows:
        frames = sum(1 for s in stamps if w["t0"] <= s < w["t1"])
        w["fps"] = frames / (w["t1"] - w["t0"])
        w["cpu_ms_per_frame"] = w["cpu_s"] * 1e3 / max(1, frames)
        print(f"phase {'viewed' if w['viewed'] else 'none':<7} {w['fps']:6.1f} fps  daemon CPU "
              f"{w['cpu_s'] / (w['t1'] - w['t0']) * 100:5.0f} %, {w['cpu_ms_per_frame']:5.1f} ms/frame, "
              f"http threads {w['http_cpu_s'] / (w['t1'] - w['t0']) * 100:4.1f} % of a core"
              + (f"  viewers got {w['viewer_frames']} frames" if w["viewed"] else ""), flush=True)
    return windows


def run_once(folder: Path, variant: str, frames: int) -> dict:
    port = free_port()
    config = write_config(folder, variant, frames, port)
    out = folder / f"{variant}.jsonl"
    out.unlink(missing_ok=True)
    stop = threading.Event()
    clients = start_clients(f"http://127.0.0.1:{port}/", stop) if variant == "viewed" else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "edgeinfer", "run", str(config), "--max-frames", str(frames)],
                          capture_output=True, text=True, timeout=900)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stop.set()
    for client in clients:
        client.join(5)
    if proc.returncode != 0:
        raise SystemExit(f"{variant}: edgeinfer run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    records = [r for r in records if r["type"] == "detections"]
    stamps = [r["stamp"] for r in records]
    span = max(stamps) - min(stamps)
    result = {"variant": variant, "records": len(records), "fps": (len(records) - 1) / span if span > 0 else 0.0,
              "age_ms_p50": statistics.median(r["age_ms"] for r in records),
              "cpu_ms_per_frame": cpu_s * 1e3 / len(records)}
    viewers = [c for c in clients if isinstance(c, Viewer)]
    if viewers:
        result["viewer_frames"] = [v.parts for v in viewers]
        result["status_polls"] = sum(c.polls for c in clients if isinstance(c, StatusPoller))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=6, help="pairs of phases in the one-daemon comparison")
    parser.add_argument("--phase-s", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the process comparison (0: skip it)")
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not (ROOT / "models/yolov3-tiny/yolov3-tiny.onnx").exists():
        raise SystemExit("run `make models` first")
    variants = ("none", "idle", "viewed")
    runs: list[dict] = []
    publish_us = publish_cost_us()
    print(f"http output on the publish thread: {publish_us:.1f} µs CPU per result (process CPU time, so other "
          f"threads of this process count too)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        windows = run_phases(Path(tmp), args.phases, args.phase_s) if args.phases else []
        for round_no in range(args.rounds):
            order = variants if round_no % 2 == 0 else variants[::-1]  # alternate, so drift hits every variant
            for variant in order:
                result = run_once(Path(tmp), variant, args.frames)
                result["round"] = round_no
                runs.append(result)
                extra = f"  viewers got {result['viewer_frames']} frames" if "viewer_frames" in result else ""
                print(f"round {round_no} {variant:<7} {result['fps']:6.1f} fps  age p50 "
                      f"{result['age_ms_p50']:6.1f} ms  daemon CPU {result['cpu_ms_per_frame']:5.1f} ms/frame "
                      f"({result['records']} records){extra}", flush=True)
    summary: dict = {"publish_us": publish_us}
    if windows:
        pairs = [(windows[i], windows[i + 1]) for i in range(0, len(windows) - 1, 2)]
        phase_ratios = [(v if v["viewed"] else n)["fps"] / (n if v["viewed"] else v)["fps"] for n, v in pairs]
        summary["phase_ratios"] = phase_ratios
        print()
        print("one daemon, viewed ÷ not viewed per pair of phases: "
              + ", ".join(f"{x:.3f}" for x in phase_ratios) + f"   median {statistics.median(phase_ratios):.3f}")
        for viewed in (False, True):
            mine = [w for w in windows if w["viewed"] is viewed]
            label = "viewed" if viewed else "not viewed"
            fps = statistics.median(w["fps"] for w in mine)
            cpu = statistics.median(w["cpu_ms_per_frame"] for w in mine)
            http = statistics.median(w["http_cpu_s"] / (w["t1"] - w["t0"]) for w in mine) * 100
            print(f"  {label:<10}: fps median {fps:.1f}, daemon CPU median {cpu:.2f} ms/frame, http output's "
                  f"threads {http:.2f} % of one core")
    if runs:
        ratios = {}
        for variant in ("idle", "viewed"):
            per_round = []
            for round_no in range(args.rounds):
                base = next(r["fps"] for r in runs if r["round"] == round_no and r["variant"] == "none")
                mine = next(r["fps"] for r in runs if r["round"] == round_no and r["variant"] == variant)
                per_round.append(mine / base)
            ratios[variant] = per_round
        summary["process_ratios"] = ratios
        print()
        print(f"{'variant':<8} {'fps median':>10} {'CPU ms/frame':>13}  {'fps ÷ none, per round':<40} median")
        for variant in variants:
            fps = statistics.median(r["fps"] for r in runs if r["variant"] == variant)
            cpu = statistics.median(r["cpu_ms_per_frame"] for r in runs if r["variant"] == variant)
            per = ratios.get(variant)
            text = ", ".join(f"{x:.3f}" for x in per) if per else "-"
            med = f"{statistics.median(per):.3f}" if per else "-"
            print(f"{variant:<8} {fps:10.1f} {cpu:13.1f}  {text:<40} {med}")
    if args.json:
        args.json.write_text(json.dumps({"windows": windows, "runs": runs, **summary, "frames": args.frames},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
