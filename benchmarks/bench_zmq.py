"""Frames over ZeroMQ: edgeinfer's transport beside imagezmq 1.2, side by side in one run, on this machine.

    python benchmarks/bench_zmq.py [--frames 1000] [--paced-fps 100] [--fast-paced-fps 1000] [--repeat 3]
                                   [--json out.json]

640x480 bgr8 frames, sender and receiver in separate processes, over tcp loopback and ipc:

- edgeinfer: `edgeinfer.client.FrameSender` (PUSH, wire format v2, its default; no copy) into the real `zmq` source
  (`ZmqSource`, PULL: parse, `np.frombuffer`), measured where the source hands the frame to the pipeline.
  `msgs/s` is what the transport carried, `frames/s` what the source delivered (a raw frame is always handed
  over; only compressed ones queued behind a newer one are skipped, and a paced sender that finds its queue
  full drops).
- imagezmq REQ/REP: `ImageSender.send_image` (waits for the hub's reply) into `ImageHub.recv_image`.
- imagezmq PUB/SUB: `ImageSender(REQ_REP=False)` into a SUB `ImageHub`.

Runs each: unthrottled (throughput; latency there is mostly queueing; both senders queue every frame up front,
edgeinfer's with `--sender-queue` = 1000, ZeroMQ's default send HWM that imagezmq's PUB uses, so the rate is
the receiving side's), paced at --paced-fps (latency, capture
stamp in the sender -> frame in the receiver's hand, wall clock of one machine) and paced at --fast-paced-fps (a
fast camera: does the receiver keep up; edgeinfer's paced sender drops when its queue is full, as a robot's
should). Every case of one repeat runs back to back; the summary gives the issue's ratios per repeat as median
(range), the receiver's CPU per message by thread (from /proc: the Python threads, ZeroMQ's I/O thread) and the
load average. In the unthrottled run both hand over every queued frame, so p50 there is queueing (hundreds of
ms); in the daemon the model's one-frame slot then keeps only the newest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 640, 480
IDLE_S = 1.5  # the receiver stops after this long without a frame


def test_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


# -- receivers (child process) -------------------------------------------------------------------------------

def receive_edgeinfer(address: str, expected: int, hwm: int) -> dict:
    from edgeinfer.transports.zmq.source import ZmqSource, ZmqSourceConfig

    latencies: list[float] = []
    arrivals: list[float] = []
    got = threading.Event()

    class Sink:  # in place of the pipeline's frame slots: note the moment the frame is handed over
        def put(self, frame, wait):
            now = time.time()
            latencies.append(now - frame.wall)
            arrivals.append(now)
            if len(arrivals) >= expected:
                got.set()
            return True

        def end(self, source):
            pass

    source = ZmqSource(ZmqSourceConfig(id="bench", endpoint=address, pattern="pull", rcvhwm=hwm), Sink())
    source.start()
    source.endpoint_ready.wait(10)
    print("ready", flush=True)
    cpu0 = thread_cpu()
    _wait_for_frames(arrivals, got)
    cpu = thread_cpu()
    source.stop()
    counters = source.counters()
    return {"latencies": latencies, "arrivals": arrivals, "received": counters["received"],
            "superseded": counters["superseded"], "cpu": {k: v - cpu0.get(k, 0.0) for k, v in cpu.items()}}


def receive_imagezmq(address: str, expected: int, reqrep: bool) -> dict:
    import imagezmq

    hub = imagezmq.ImageHub(open_port=address, REQ_REP=reqrep)  # REP binds; SUB connects to the sender's PUB
    print("ready", flush=True)
    latencies, arrivals = [], []
    hub.zmq_socket.setsockopt(__import__("zmq").RCVTIMEO, int(IDLE_S * 1000))
    cpu0 = thread_cpu()
    while len(arrivals) < expected:
        try:
            msg, image = hub.recv_image()
        except Exception:  # zmq.Again after IDLE_S: the sender is done
            break
        now = time.time()
        if reqrep:
            hub.send_reply(b"OK")
        if msg == "warmup":
            continue
        latencies.append(now - float(msg))
        arrivals.append(now)
    cpu = thread_cpu()
    return {"latencies": latencies, "arrivals": arrivals, "received": len(arrivals), "superseded": 0,
            "cpu": {k: v - cpu0.get(k, 0.0) for k, v in cpu.items()}}


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process, keyed by thread name (ZeroMQ names its I/O threads ZMQbg/IO/n)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue  # the thread ended meanwhile
        key = "io" if name.startswith("ZMQbg/IO") else "zmq_other" if name.startswith("ZMQbg") else "python"
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _wait_for_frames(arrivals: list[float], got: threading.Event) -> None:
    while not got.wait(0.1):
        if arrivals and time.time() - arrivals[-1] > IDLE_S:
            return
        if not arrivals and got.wait(10):
            return


# -- senders (this process) ----------------------------------------------------------------------------------

def send_edgeinfer(address: str, frames: int, fps: float | None, queue: int, done: Callable[[], None]) -> dict:
    from edgeinfer.transports.zmq.client import FrameSender

    images = [test_image(i) for i in range(4)]
    # unthrottled: queue like imagezmq's PUB (and wait for room rather than drop), so every frame is offered and
    # the rate is the receiving side's; paced: the client's defaults, a robot's (a queue of 2, drop when full)
    options = {"sndhwm": queue, "block": True} if not fps else {}
    with FrameSender(address, **options) as sender:
        time.sleep(0.3)  # the connection is made in the background
        t0 = time.perf_counter()
        for i in range(frames):
            if fps:
                _pace(t0, i, fps)
            # the capture stamp is taken before the send call, as for imagezmq below: the whole send path counts
            sender.send(images[i % 4], stamp=time.time())
        elapsed = time.perf_counter() - t0
        done()  # the receiver has what it will get: only now close (LINGER 0 would drop what is still queued)
        return {"sent": sender.sent, "dropped_at_sender": sender.dropped, "send_s": elapsed}


def send_imagezmq(address: str, frames: int, fps: float | None, reqrep: bool, done: Callable[[], None]) -> dict:
    import imagezmq

    images = [test_image(i) for i in range(4)]
    sender = imagezmq.ImageSender(connect_to=address, REQ_REP=reqrep)
    if not reqrep:
        time.sleep(0.5)  # PUB: the SUB must have connected, or the first frames are lost
    else:
        sender.send_image("warmup", images[0])
    t0 = time.perf_counter()
    for i in range(frames):
        if fps:
            _pace(t0, i, fps)
        sender.send_image(repr(time.time()), images[i % 4])
    elapsed = time.perf_counter() - t0
    done()
    sender.close()
    return {"sent": frames, "dropped_at_sender": 0, "send_s": elapsed}


def _pace(t0: float, i: int, fps: float) -> None:
    delay = t0 + i / fps - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


# -- one case ------------------------------------------------------------------------------------------------

def run_case(kind: str, transport: str, frames: int, fps: float | None, workdir: Path, hwm: int,
             sender_queue: int = 1000) -> dict:
    if transport == "tcp":
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        address = f"tcp://127.0.0.1:{port}"
    else:
        address = f"ipc://{workdir}/{kind}-{fps or 0:g}"
    child = subprocess.Popen([sys.executable, __file__, "--role", kind, "--address", address,
                              "--expected", str(frames), "--hwm", str(hwm)], stdout=subprocess.PIPE, text=True)
    output: list[str] = []

    def done() -> None:
        output.append(child.communicate(timeout=120)[0])

    try:
        assert child.stdout.readline().strip() == "ready"
        if kind == "edgeinfer":
            sent = send_edgeinfer(address, frames, fps, sender_queue, done)
        else:
            sent = send_imagezmq(address, frames, fps, kind == "imagezmq-reqrep", done)
        out = output[0]
    finally:
        if child.poll() is None:
            child.kill()
    got = json.loads(out.strip().splitlines()[-1])
    arrivals, lat = got["arrivals"], sorted(got["latencies"])
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    row = {
        "case": kind if kind != "edgeinfer" else f"edgeinfer rcvhwm {hwm}", "transport": transport,
        "mode": f"paced {fps:g} fps" if fps else "unthrottled",
        "sent": sent["sent"], "dropped_at_sender": sent["dropped_at_sender"], "received": got["received"],
        "delivered": len(arrivals), "superseded": got["superseded"],
        "msgs_per_s": (got["received"] - 1) / span if span == span and span > 0 else None,
        "frames_per_s": (len(arrivals) - 1) / span if span == span and span > 0 else None,
        "p50_ms": 1e3 * lat[len(lat) // 2] if lat else None,
        "p99_ms": 1e3 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        # receiver CPU per received message, by thread kind: where the receive path spends its time
        "rx_python_us": 1e6 * got["cpu"].get("python", 0.0) / max(got["received"], 1),
        "rx_io_us": 1e6 * got["cpu"].get("io", 0.0) / max(got["received"], 1),
    }
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--paced-fps", type=float, default=100.0)
    parser.add_argument("--hwm", type=int, nargs="+", default=[2, 8],
                        help="the edgeinfer source's rcvhwm values to compare")
    parser.add_argument("--sender-queue", type=int, default=1000,
                        help="edgeinfer sender's sndhwm in the unthrottled case (imagezmq's PUB: ZeroMQ's 1000)")
    parser.add_argument("--transports", nargs="+", default=["tcp", "ipc"])
    parser.add_argument("--fast-paced-fps", type=float, nargs="*", default=[1000.0],
                        help="also paced at these rates: does the receiver keep up with a fast camera-paced sender")
    parser.add_argument("--repeat", type=int, default=1, help="run every case this many times, alternating")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        if args.role == "edgeinfer":
            result = receive_edgeinfer(args.address, args.expected, args.hwm[0])
        else:
            result = receive_imagezmq(args.address, args.expected, reqrep=(args.role == "imagezmq-reqrep"))
        print(json.dumps(result), flush=True)
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="bzmq"))
    rows = []
    load_before = os.getloadavg()
    try:
        for rep in range(args.repeat):
            for transport in args.transports:
                rates = [(None, args.frames), (args.paced_fps, max(int(args.paced_fps * 3), 100))]
                rates += [(fps, max(int(fps * 1.5), 100)) for fps in args.fast_paced_fps]
                for fps, frames in rates:
                    # alternated in one run, so a busy moment of the machine hits every case alike
                    cases = [("edgeinfer", h) for h in args.hwm] + [("imagezmq-reqrep", 0), ("imagezmq-pubsub", 0)]
                    for kind, hwm in cases:
                        rows.append(run_case(kind, transport, frames, fps, workdir, hwm, args.sender_queue)
                                    | {"repeat": rep})
                        print_row(rows[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_summary(rows, args)
    print(f"load average (1 min) before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs (shared machine: compare ratios within a repeat, not absolute numbers)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _range(values: list[float]) -> str:
    values = sorted(v for v in values if v is not None)
    if not values:
        return "-"
    mid = values[len(values) // 2]
    return f"{mid:.2f} ({values[0]:.2f}-{values[-1]:.2f})" if len(values) > 1 else f"{mid:.2f}"


def print_summary(rows: list[dict], args: argparse.Namespace) -> None:
    """The issue's comparisons, one ratio per repeat (cases of one repeat ran back to back): median (range)."""
    for transport in args.transports:
        for hwm in args.hwm:
            ours = f"edgeinfer rcvhwm {hwm}"
            ratios: dict[str, list[float]] = {"reqrep": [], "pubsub": [], "p50": [], "py": [], "io": []}
            for rep in range(args.repeat):
                by = {(r["case"], r["mode"]): r for r in rows if r["transport"] == transport and r["repeat"] == rep}
                fast = {c: by[(c, "unthrottled")] for c in (ours, "imagezmq-reqrep", "imagezmq-pubsub")}
                paced = {c: by[(c, f"paced {args.paced_fps:g} fps")] for c in (ours, "imagezmq-pubsub")}
                ratios["reqrep"].append(fast[ours]["frames_per_s"] / fast["imagezmq-reqrep"]["frames_per_s"])
                ratios["pubsub"].append(fast[ours]["frames_per_s"] / fast["imagezmq-pubsub"]["frames_per_s"])
                best_izmq = min(by[(c, f"paced {args.paced_fps:g} fps")]["p50_ms"]
                                for c in ("imagezmq-reqrep", "imagezmq-pubsub"))
                ratios["p50"].append(paced[ours]["p50_ms"] / best_izmq)
                ratios["py"].append(fast[ours]["rx_python_us"] / max(fast["imagezmq-pubsub"]["rx_python_us"], 1e-9))
                ratios["io"].append(fast[ours]["rx_io_us"] / max(fast["imagezmq-pubsub"]["rx_io_us"], 1e-9))
            for fps in args.fast_paced_fps:
                mode = f"paced {fps:g} fps"
                fast_rows = [r for r in rows if r["transport"] == transport and r["mode"] == mode]
                for case in (ours, "imagezmq-reqrep", "imagezmq-pubsub"):
                    got = [r for r in fast_rows if r["case"] == case]
                    print(f"{transport}: {case} at {mode}: frames handed/s {_range([r['frames_per_s'] for r in got])}"
                          f", handed/sent {_range([r['delivered'] / max(r['sent'], 1) for r in got])}, p50 ms "
                          f"{_range([r['p50_ms'] for r in got])}")
            print(f"{transport}: edgeinfer (rcvhwm {hwm}) frames handed/s ÷ imagezmq REQ/REP "
                  f"{_range(ratios['reqrep'])}, "
                  f"÷ PUB/SUB {_range(ratios['pubsub'])};  paced {args.paced_fps:g} fps p50 ÷ imagezmq's best "
                  f"{_range(ratios['p50'])};  receiver CPU per message ÷ PUB/SUB's: Python threads "
                  f"{_range(ratios['py'])}, ZeroMQ I/O thread {_range(ratios['io'])}  [{args.repeat} repeat(s)]")


def print_row(r: dict) -> None:
    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"
    print(f"{r['case']:18} {r['transport']:3} {r['mode']:15} sent {r['sent']:5} recv {r['received']:5} "
          f"delivered {r['delivered']:5}  msgs/s {f(r['msgs_per_s'], '7.0f')}  frames/s {f(r['frames_per_s'], '7.0f')}"
          f"  p50 {f(r['p50_ms'], '6.2f')} ms  p99 {f(r['p99_ms'], '6.2f')} ms  rx CPU/msg python "
          f"{r['rx_python_us']:4.0f} us io {r['rx_io_us']:4.0f} us", flush=True)


if __name__ == "__main__":
    sys.exit(main())
