"""Frames in over ZeroMQ, with the real daemon in its own process and real senders: edgeinfer's client, imagezmq
1.2 (PUB and REQ, run unchanged in a child process), CURVE with real keys from `edgeinfer keys`, and a peer that
sends every kind of malformed message. Records are read back from the daemon's JSONL file and its PUB socket."""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from support.daemon_process import DaemonProcess, first
from support.frames import wait_until
from support.tiny_models import constant_detector, slow_detector

zmq = pytest.importorskip("zmq")

from edgeinfer.transports.zmq.client import ClientKeys, Control, FrameSender, ResultReader  # noqa: E402
from edgeinfer.transports.zmq.wire import encode_header, header_for_image  # noqa: E402

pytestmark = pytest.mark.timeout(180)

ROWS = np.array([[32, 32, 16, 16, 0.9, 0.1, 0.8]], dtype=np.float32)
PERIOD_MS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ipc_dir():
    # ipc paths must stay under ~100 characters: pytest's tmp_path can be longer
    path = Path(tempfile.mkdtemp(prefix="ezmq"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def tiny_model_entry(path: Path, sources: list[str], **extra) -> dict:
    return {"id": "det", "path": str(path), "sources": sources,
            "decoder": {"type": "yolo", "layout": "v5", "conf_threshold": 0.5}, "max_age_ms": 60_000, **extra}


# frames 130-169 of bikes.mp4 show cars and people nearly throughout (the first ones are mostly empty road)
FIRST_FRAME = 130


def video_frames(path: Path, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    index = 0
    while len(frames) < count:
        ok, image = cap.read()
        if not ok:
            break
        if index >= FIRST_FRAME:
            frames.append(image)
        index += 1
    cap.release()
    assert len(frames) == count
    return frames


def wait_ready(daemon: DaemonProcess, timeout: float = 60) -> None:
    """READY=1 comes after the sources started; their sockets bind on their threads a moment later."""
    deadline = time.monotonic() + timeout
    while not any(m.get("READY") == "1" for _, m in daemon.notify.messages):
        if daemon.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"daemon not ready:\n{daemon.stderr()}")
        time.sleep(0.05)
    daemon.wait_for(lambda lines: "receiving on" in daemon.stderr(), 10, "the zmq source's socket")


def newest_counters(daemon: DaemonProcess, source: str) -> dict:
    beats = [b for b in daemon.heartbeats() if source in b.get("counters", {})]
    return beats[-1]["counters"][source] if beats else {}


# imagezmq's own sender, unchanged, in its own process: send_image over PUB, send_jpg over REQ (which blocks
# until the hub answers, so the daemon must reply as imagezmq's ImageHub does).
IMAGEZMQ_SENDER = r"""
import json, sys, time
import cv2, imagezmq
args = json.loads(sys.argv[1])
sender = imagezmq.ImageSender(connect_to=args["address"], REQ_REP=args["reqrep"])
cap = cv2.VideoCapture(args["video"])
for _ in range(args["skip"]):
    cap.read()
replies = []
time.sleep(0.5)  # a PUB sender loses what it sends before the SUB has connected
for i in range(args["frames"]):
    ok, image = cap.read()
    if args["jpg"]:
        reply = sender.send_jpg("robot-%d" % i, cv2.imencode(".jpg", image)[1].tobytes())
    else:
        reply = sender.send_image("robot-%d" % i, image)
    replies.append(reply.decode() if isinstance(reply, bytes) else reply)
    time.sleep(1.0 / args["fps"])
print(json.dumps(replies), flush=True)
"""


def run_imagezmq(address: str, video: Path, reqrep: bool, jpg: bool, frames: int = 40, fps: float = 10):
    args = {"address": address, "video": str(video), "reqrep": reqrep, "jpg": jpg, "frames": frames, "fps": fps,
            "skip": FIRST_FRAME}
    return subprocess.Popen([sys.executable, "-c", IMAGEZMQ_SENDER, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_demo_video_in_detections_out_from_the_client_and_imagezmq(tmp_path, ipc_dir, demo_model, demo_video):
    frames_port, pub_port, control_port = free_port(), free_port(), free_port()
    izmq_pub, izmq_req = f"ipc://{ipc_dir}/izpub", f"ipc://{ipc_dir}/izreq"
    config = {
        "sources": [
            {"id": "robot", "type": "zmq", "endpoint": f"tcp://127.0.0.1:{frames_port}", "pattern": "pull"},
            {"id": "izpub", "type": "zmq", "endpoint": izmq_pub, "pattern": "sub", "protocol": "imagezmq"},
            {"id": "izreq", "type": "zmq", "endpoint": izmq_req, "pattern": "rep", "protocol": "imagezmq"},
        ],
        "models": [{
            "id": "yolo", "path": str(demo_model.onnx), "labels": str(demo_model.labels),
            "sources": ["robot", "izpub", "izreq"], "max_age_ms": 60_000,
            "preprocess": {"resize": "stretch", "color": "rgb", "scale": 1 / 255},
            "decoder": {"type": "yolo", "layout": "v5", "conf_threshold": 0.25, "iou_threshold": 0.45},
        }],
        "watchdog": {"period_ms": PERIOD_MS},
    }
    zmq_output = {"type": "zmq", "endpoint": f"tcp://127.0.0.1:{pub_port}",
                  "control_endpoint": f"tcp://127.0.0.1:{control_port}"}
    daemon = DaemonProcess(tmp_path, config, extra_outputs=[zmq_output])
    images = video_frames(demo_video, 40)
    sent: dict[int, float] = {}
    pub = req = None
    try:
        wait_ready(daemon)
        pub = run_imagezmq(izmq_pub, demo_video, reqrep=False, jpg=False)
        req = run_imagezmq(izmq_req, demo_video, reqrep=True, jpg=True)
        with FrameSender(f"tcp://127.0.0.1:{frames_port}", frame_id="front_camera") as sender, \
                ResultReader(f"tcp://127.0.0.1:{pub_port}", topics=("detections/robot",)) as reader:
            for i, image in enumerate(images):
                stamp = time.time()
                if sender.send(image, seq=1000 + i, stamp=stamp):
                    sent[1000 + i] = stamp
                time.sleep(0.1)
            got = reader.recv(10)
        pub_out, pub_err = pub.communicate(timeout=60)
        req_out, req_err = req.communicate(timeout=60)
        assert pub.returncode == 0, pub_err
        assert req.returncode == 0, req_err
        daemon.wait_for(lambda lines: {r["source"] for r in lines if r["type"] == "detections"}
                        >= {"robot", "izpub", "izreq"}, 30, "records from every sender")
    finally:
        for proc in (pub, req):
            if proc is not None and proc.poll() is None:
                proc.kill()
        daemon.stop()
    assert json.loads(req_out) == ["OK"] * 40  # imagezmq's REQ sender got its hub reply for every frame

    records = daemon.records()
    by_source = {s: [r for r in records if r["source"] == s] for s in ("robot", "izpub", "izreq")}
    robot = by_source["robot"]
    # the sender's sequence number, capture stamp and frame id carry through to the records
    assert robot and all(r["frame"] in sent for r in robot), [r["frame"] for r in robot]
    assert all(abs(r["stamp"] - sent[r["frame"]]) < 1e-5 for r in robot)
    assert [r["frame"] for r in robot] == sorted(r["frame"] for r in robot)
    # the demo video holds cars, people and bicycles: every sender's frames find them
    for name, recs in by_source.items():
        labels = {d["label"] for r in recs for d in r["detections"]}
        print(f"\n{name}: {len(recs)} records, labels {sorted(labels)}, "
              f"{[(r['frame'], len(r['detections'])) for r in recs]}")
        assert labels & {"car", "person", "bicycle"}, (name, labels)
    # and the client library reads the same records off the PUB socket
    assert got is not None and got[0] == "detections/robot" and got[1]["frame"] in sent
    counters = newest_counters(daemon, "robot")
    assert counters["received"] >= len(robot) and not counters["malformed"]


def test_latest_frame_under_a_slow_model_keeps_the_age_bounded(tmp_path, ipc_dir):
    model = slow_detector(tmp_path / "slow.onnx", ROWS, iterations=1500)  # 0.1-0.6 s per inference, with load
    endpoint = f"ipc://{ipc_dir}/frames"
    config = {
        "sources": [{"id": "cam", "type": "zmq", "endpoint": endpoint}],
        "models": [tiny_model_entry(model, ["cam"], budget_ms=10_000)],
        "watchdog": {"period_ms": PERIOD_MS},
    }
    daemon = DaemonProcess(tmp_path, config)
    image = np.full((240, 320, 3), 60, np.uint8)
    try:
        wait_ready(daemon)
        sent = 0
        with FrameSender(endpoint) as sender:
            start = time.monotonic()
            while time.monotonic() - start < 5.0:  # 100 fps: many times what the model can take
                sent += sender.send(image)
                time.sleep(0.01)
        daemon.wait_for(lambda lines: len([r for r in lines if r["type"] == "detections"]) >= 5, 30,
                        "records from the slow model")
        time.sleep(1.0)
    finally:
        daemon.stop()
    records = daemon.records()
    infer = max(r["infer_ms"] for r in records)
    ages = [r["age_ms"] for r in records]
    print(f"\nsent {sent}, published {len(records)}, infer max {infer:.0f} ms, age median "
          f"{statistics.median(ages):.0f} max {max(ages):.0f} ms")
    assert len(records) < sent / 3, "a slow model cannot have processed most frames"
    # A queue would age frames by (frames behind) x infer: seconds by the end. The newest frame is at most one
    # inference waiting for a buffer plus its own inference old, plus scheduling on a busy machine.
    assert max(ages) < 3 * infer + 500, ages
    late = [r["age_ms"] for r in records[len(records) // 2:]]
    assert max(late) < 3 * infer + 500
    frames = [r["frame"] for r in records]
    assert frames == sorted(frames) and frames[-1] - frames[0] > len(frames)  # it skipped to newer frames
    counters = newest_counters(daemon, "cam")
    assert counters["received"] > len(records)


def make_keys(folder: Path, *names: str) -> None:
    for name in names:
        done = subprocess.run([sys.executable, "-m", "edgeinfer", "keys", name, "--dir", str(folder)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert (folder / f"{name}.key").is_file() and (folder / f"{name}.key_secret").stat().st_mode & 0o077 == 0


def test_curve_admits_known_clients_refuses_and_counts_unknown_ones(tmp_path, ipc_dir):
    keys = tmp_path / "keys"
    make_keys(keys, "server", "robot", "operator", "stranger")
    clients, operators = tmp_path / "clients", tmp_path / "operators"
    clients.mkdir()
    operators.mkdir()
    for name in ("robot", "operator"):
        shutil.copy(keys / f"{name}.key", clients)
    shutil.copy(keys / "operator.key", operators)
    curve = {"secret_key": str(keys / "server.key_secret"), "clients": str(clients)}
    frames, pub, control = (f"ipc://{ipc_dir}/{n}" for n in ("frames", "pub", "control"))
    config = {
        "sources": [{"id": "cam", "type": "zmq", "endpoint": frames, "curve": curve}],
        "models": [tiny_model_entry(constant_detector(tmp_path / "det.onnx", ROWS), ["cam"])],
        "watchdog": {"period_ms": PERIOD_MS},
    }
    zmq_output = {"type": "zmq", "endpoint": pub, "control_endpoint": control,
                  "curve": {**curve, "reset_clients": str(operators)}}
    daemon = DaemonProcess(tmp_path, config, extra_outputs=[zmq_output])

    def client_keys(name: str) -> ClientKeys:
        return ClientKeys(keys / "server.key", keys / f"{name}.key_secret")

    image = np.full((48, 64, 3), 60, np.uint8)
    try:
        wait_ready(daemon)
        with FrameSender(frames, keys=client_keys("robot")) as robot, \
                FrameSender(frames, keys=client_keys("stranger")) as stranger, \
                ResultReader(pub, keys=client_keys("robot")) as reader, \
                ResultReader(pub, keys=client_keys("stranger")) as snooper, \
                ResultReader(pub) as plain:
            for i in range(30):
                robot.send(image, seq=i)
                stranger.send(image, seq=100_000 + i)
                time.sleep(0.05)
            got = reader.recv(10)
            assert got is not None and got[0] in ("detections/cam", "heartbeat")
            assert snooper.recv(1.0) is None, "an unknown key read the daemon's records"
            assert plain.recv(0.5) is None, "a client without CURVE read the daemon's records"
            with FrameSender(frames) as plain_sender:  # no CURVE at all: fails the handshake, counted too
                for i in range(5):
                    plain_sender.send(image, seq=200_000 + i)
                    time.sleep(0.05)
        with Control(control, keys=client_keys("robot")) as ctl:
            assert ctl.ping()["ok"]
            assert ctl.status()["ok"]
            refused = ctl.reset()
        assert refused["ok"] is False and "reset_clients" in refused["error"]
        with Control(control, keys=client_keys("operator")) as ctl:
            assert ctl.reset()["ok"] is True
        with Control(control, keys=client_keys("stranger"), timeout=1.0) as ctl, pytest.raises(TimeoutError):
            ctl.reset()
        # the source refused the stranger (unknown key) and the plain sender (no CURVE); the output the
        # snooper, the plain reader and the stranger's control client
        daemon.wait_for(lambda lines: (newest_counters(daemon, "cam").get("unauthenticated") or 0) >= 2
                        and (newest_counters(daemon, "zmq").get("unauthenticated") or 0) >= 3, 10,
                        "refused peers counted in the heartbeat")
    finally:
        daemon.stop()
    records = daemon.records()
    assert records and all(r["frame"] < 100_000 for r in records), "a frame from an unknown key was processed"
    out = newest_counters(daemon, "zmq")
    assert out["refused_commands"] == 1
    print(f"\ncurve: source counters {newest_counters(daemon, 'cam')}, output counters {out}")


def test_every_malformed_kind_is_counted_while_frames_keep_flowing(tmp_path, ipc_dir):
    endpoint = f"ipc://{ipc_dir}/frames"
    config = {
        "sources": [{"id": "cam", "type": "zmq", "endpoint": endpoint, "max_bytes": 16384, "rcvhwm": 50}],
        "models": [tiny_model_entry(constant_detector(tmp_path / "det.onnx", ROWS), ["cam"])],
        "watchdog": {"period_ms": PERIOD_MS},
    }
    daemon = DaemonProcess(tmp_path, config)
    image = np.full((48, 64, 3), 60, np.uint8)
    header = header_for_image(image)
    payload = image.tobytes()
    big = np.zeros((100, 100, 3), np.uint8)
    bad = {
        "parts": [[header], [header, payload, b"extra"]],
        "header": [[b"not json", payload], [b'{"v": 1, "encoding": "bgr8", "width": 64}', payload]],
        "version": [[b'{"v": 7, "encoding": "bgr8", "width": 64, "height": 48}', payload]],
        "encoding": [[b'{"v": 1, "encoding": "yuyv", "width": 64, "height": 48}', payload]],
        "size": [[header, payload[:-10]]],
        "too_large": [[header_for_image(big), big.tobytes()]],
        "corrupt": [[encode_header("jpeg"), b"\xff\xd8\xff\xe0 this is no jpeg"]],
    }
    rounds = 20
    try:
        wait_ready(daemon)
        with FrameSender(endpoint) as good, FrameSender(endpoint, sndhwm=1000) as rogue:
            def send_good(seconds: float) -> int:
                start = time.monotonic()
                count = 0
                while time.monotonic() - start < seconds:
                    count += good.send(image)
                    time.sleep(0.05)
                return count
            send_good(2.0)
            before = len(daemon.records())
            start = time.monotonic()
            for _ in range(rounds):
                good.send(image)
                for messages in bad.values():  # corrupt goes last: only the newest message is decoded
                    for parts in messages:
                        rogue.socket.send_multipart(parts)
                time.sleep(0.05)
            sent_during = rounds + send_good(1.0)
            elapsed = time.monotonic() - start
            during = len(daemon.records()) - before
        daemon.wait_for(lambda lines: newest_counters(daemon, "cam").get("malformed", {}).get("too_large", 0)
                        >= rounds, 10, "the malformed messages counted in the heartbeat")
        time.sleep(3 * PERIOD_MS / 1000)
    finally:
        daemon.stop()
    counters = newest_counters(daemon, "cam")
    print(f"\nmalformed: {counters['malformed']}; good frames during the burst: {sent_during} sent, {during} "
          f"published in {elapsed:.1f} s")
    # every kind the cheap checks find is counted exactly; a corrupt JPEG only when it is the newest message
    # (older queued ones are skipped undecoded, counted as superseded), which it is here all but rarely
    expected = {k: rounds * len(v) for k, v in bad.items()}
    corrupt = counters["malformed"].pop("corrupt", 0)
    expected.pop("corrupt")
    assert counters["malformed"] == expected
    assert rounds // 2 <= corrupt <= rounds
    # the good sender's frames keep going through while the rogue one floods the same socket
    assert during >= 0.5 * sent_during
    assert daemon.proc.returncode == 0
    # logged at a bounded rate: the first of each kind, not every one
    logged = daemon.stderr_path.read_text().count("dropped a malformed message")
    assert len(bad) <= logged <= 2 * len(bad), logged


def test_a_quiet_sender_is_not_a_reconnect(tmp_path, ipc_dir):
    endpoint = f"ipc://{ipc_dir}/frames"
    config = {
        "sources": [{"id": "cam", "type": "zmq", "endpoint": endpoint, "min_fps": 5}],
        "models": [tiny_model_entry(constant_detector(tmp_path / "det.onnx", ROWS), ["cam"])],
        "watchdog": {"period_ms": PERIOD_MS},
    }
    daemon = DaemonProcess(tmp_path, config)
    image = np.full((48, 64, 3), 60, np.uint8)
    try:
        wait_ready(daemon)
        with FrameSender(endpoint) as sender:
            for _ in range(20):
                sender.send(image)
                time.sleep(0.05)
            daemon.wait_for(lambda lines: first(lines, lambda r: r["type"] == "detections"), 10, "a record")
            time.sleep(2.0)  # quiet: the watchdog's alive check notices, the source does not reconnect
            stale = daemon.wait_for(lambda lines: first(lines, lambda r: r.get("type") == "heartbeat"
                                                        and r["entities"]["cam"]["status"] != "OK"), 10,
                                    "the watchdog noticing the quiet sender")
            before = len(daemon.records())
            for _ in range(20):
                sender.send(image)
                time.sleep(0.05)
            daemon.wait_for(lambda lines: len([r for r in lines if r["type"] == "detections"]) > before, 10,
                            "records again when the sender resumes")
    finally:
        daemon.stop()
    assert stale["entities"]["cam"]["status"] in ("FAILED", "EXPIRED")
    log = daemon.stderr_path.read_text()
    assert "reconnect" not in log and "stream ended" not in log and "receiving on" in log


def test_sub_source_is_the_curve_server_while_it_connects_to_a_robot_pub(tmp_path, ipc_dir):
    from edgeinfer.mailbox import FanOut, FrameSlots
    from edgeinfer.transports.zmq.source import ZmqSource, ZmqSourceConfig

    keys = tmp_path / "keys"
    make_keys(keys, "server", "robot")
    clients = tmp_path / "clients"
    clients.mkdir()
    shutil.copy(keys / "robot.key", clients)
    endpoint = f"ipc://{ipc_dir}/robot-pub"
    image = np.full((48, 64, 3), 60, np.uint8)
    slots = FrameSlots(["cam"])
    config = ZmqSourceConfig(id="cam", endpoint=endpoint, pattern="sub",
                             curve={"secret_key": keys / "server.key_secret", "clients": clients})
    # the robot binds a PUB socket (as imagezmq's PUB mode does); the daemon connects to it
    with FrameSender(endpoint, pattern="pub", keys=ClientKeys(keys / "server.key", keys / "robot.key_secret")) \
            as robot, ZmqSource(config, FanOut([slots])) as source:
        assert source.endpoint_ready.wait(10)
        got = []
        deadline = time.monotonic() + 10
        seq = 0
        while not got and time.monotonic() < deadline:  # PUB drops until the subscription has arrived
            robot.send(image, seq=seq, stamp=time.time())
            seq += 1
            got = slots.take(1, timeout=0.1)
    assert got and got[0].source == "cam" and got[0].seq < seq and np.array_equal(got[0].image, image)
    assert source.counters()["unauthenticated"] == 0


def test_a_sender_restarting_its_seq_is_renumbered_not_a_watchdog_fault(tmp_path, ipc_dir):
    endpoint = f"ipc://{ipc_dir}/frames"
    config = {
        "sources": [{"id": "cam", "type": "zmq", "endpoint": endpoint}],
        "models": [tiny_model_entry(constant_detector(tmp_path / "det.onnx", ROWS), ["cam"])],
        "watchdog": {"period_ms": PERIOD_MS},  # defaults: flow violations have no tolerance, SAFE_STOP
    }
    daemon = DaemonProcess(tmp_path, config)
    image = np.full((48, 64, 3), 60, np.uint8)
    stamps = {}
    try:
        wait_ready(daemon)
        for run in range(2):  # the robot's sender restarts and counts from 0 again
            with FrameSender(endpoint) as sender:
                for seq in range(15):
                    stamp = time.time()
                    sender.send(image, seq=seq, stamp=stamp)
                    stamps[stamp] = (run, seq)  # records carry the sender's stamp exactly
                    time.sleep(0.06)
                time.sleep(0.3)
        daemon.wait_for(lambda lines: newest_counters(daemon, "cam").get("seq_went_back") == 1, 10,
                        "the restart counted")
    finally:
        daemon.stop()
    records = daemon.records()
    frames = [r["frame"] for r in records]
    assert frames == sorted(frames) and len(set(frames)) == len(frames), frames
    assert {stamps[r["stamp"]][0] for r in records} == {0, 1}, "frames of both runs published"
    # before the restart frame == seq; after it frame == seq + the offset past the last number delivered
    offsets = {stamps[r["stamp"]][0]: r["frame"] - stamps[r["stamp"]][1] for r in records}
    assert offsets[0] == 0 and offsets[1] > 0
    assert all(r["frame"] - stamps[r["stamp"]][1] == offsets[stamps[r["stamp"]][0]] for r in records)
    states = {b["state"] for b in daemon.heartbeats()}
    assert "SAFE_STOP" not in states and "FAULT" not in states, states
    assert "seq went back to 0" in daemon.stderr_path.read_text()


class _HeldSink:
    """In place of the pipeline's frame slots: records what the source hands over; the first put blocks until
    `release` is set, so that a burst queues up in ZeroMQ meanwhile."""

    def __init__(self):
        import threading

        self.frames: list = []
        self.release = threading.Event()
        self.first = threading.Event()

    def put(self, frame, wait):
        self.first.set()
        self.release.wait(10)
        self.frames.append(frame)
        return True

    def end(self, source):
        pass


def _source(endpoint: str, sink: _HeldSink, **options):
    from edgeinfer.transports.zmq.source import ZmqSource, ZmqSourceConfig

    source = ZmqSource(ZmqSourceConfig(id="cam", endpoint=endpoint, **options), sink)
    source.start()
    assert source.endpoint_ready.wait(10)
    return source


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_burst_of_raw_frames_is_handed_over_whole_and_in_order(ipc_dir, transport):
    # raw frames are views of the received buffer: the source hands every one over (the model's slot keeps the
    # newest), so a burst that queued while the pipeline was busy loses nothing at the source
    endpoint = f"tcp://127.0.0.1:{free_port()}" if transport == "tcp" else f"ipc://{ipc_dir}/raw"
    sink = _HeldSink()
    source = _source(endpoint, sink, rcvhwm=64)
    image = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    try:
        with FrameSender(endpoint, sndhwm=64, block=True) as sender:
            sender.send(image, seq=0)
            assert sink.first.wait(10)  # the source is now held inside put: the rest queues in ZeroMQ
            for seq in range(1, 40):
                sender.send(image, seq=seq)
            time.sleep(0.3)
            sink.release.set()
            assert wait_until(lambda: len(sink.frames) == 40, 10), len(sink.frames)
    finally:
        source.stop()
    assert [f.seq for f in sink.frames] == list(range(40))
    assert all(np.array_equal(f.image, image) for f in sink.frames)
    # views of ZeroMQ's buffers, shared by every model and output: read-only (frame.py)
    assert not any(f.image.flags.writeable for f in sink.frames)
    assert source.counters()["superseded"] == 0 and source.counters()["received"] == 40


def test_a_burst_of_jpegs_decodes_only_the_newest(ipc_dir):
    endpoint = f"ipc://{ipc_dir}/jpeg"
    sink = _HeldSink()
    source = _source(endpoint, sink, rcvhwm=64)
    image = np.full((48, 64, 3), 90, np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    try:
        with FrameSender(endpoint, sndhwm=64, block=True) as sender:
            sender.send_encoded(jpeg, seq=0)
            assert sink.first.wait(10)
            for seq in range(1, 20):
                sender.send_encoded(jpeg, seq=seq)
            time.sleep(0.3)
            sink.release.set()
            assert wait_until(lambda: source.counters()["received"] == 20 and len(sink.frames) == 2, 10)
            time.sleep(0.2)
    finally:
        source.stop()
    # the first, then the newest of the 19 that queued behind it; 18 skipped undecoded
    assert [f.seq for f in sink.frames] == [0, 19]
    assert source.counters()["superseded"] == 18


def test_one_source_takes_wire_v1_and_v2_senders_at_once(ipc_dir):
    # the daemon tells the formats apart per message, so an old robot (v1, JSON) and a new one (v2, binary, the
    # client's default) can share a source
    endpoint = f"ipc://{ipc_dir}/mixed"
    sink = _HeldSink()
    sink.release.set()
    source = _source(endpoint, sink)
    image = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    try:
        with FrameSender(endpoint, wire=1, block=True) as old, FrameSender(endpoint, block=True) as new:
            old.send(image, seq=0, stamp=100.0, frame_id="old_cam")
            assert wait_until(lambda: len(sink.frames) == 1, 10)
            new.send(image, seq=1, stamp=101.0, frame_id="new_cam")
            assert wait_until(lambda: len(sink.frames) == 2, 10)
    finally:
        source.stop()
    assert [(f.seq, f.wall, f.frame_id) for f in sink.frames] == [(0, 100.0, "old_cam"), (1, 101.0, "new_cam")]
    assert all(np.array_equal(f.image, image) and not f.image.flags.writeable for f in sink.frames)
    assert source.counters()["malformed"] == {}
    with pytest.raises(ValueError, match="wire must be 1 or 2"):
        FrameSender(endpoint, wire=3)
