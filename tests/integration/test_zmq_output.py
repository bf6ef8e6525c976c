"""The ZeroMQ output with real sockets on loopback; subscribers and some clients run in separate processes.

Every socket binds `tcp://127.0.0.1:*` and the tests read the port back from `bound_endpoints`, so they never
collide with each other or with a daemon running on the box.
"""

from __future__ import annotations

import json
import queue
import statistics
import subprocess
import sys
import threading
import time

import pytest
import yaml

zmq = pytest.importorskip("zmq")

from edgeinfer.config import ConfigError, parse_config  # noqa: E402
from edgeinfer.lazy import MissingDependency  # noqa: E402
from edgeinfer.outputs import OutputError, create_output  # noqa: E402
from edgeinfer.runtime import RuntimeContext  # noqa: E402
from edgeinfer.transports.zmq.output import MAX_REQUEST_BYTES, UnknownCommand, ZmqOutput, ZmqOutputConfig  # noqa: E402

pytestmark = pytest.mark.timeout(60)

ANY_PORT = "tcp://127.0.0.1:*"
# ping's reply names the frame wire formats the daemon's zmq sources take, so a sender can pick (docs/zmq.md)
PONG = {"ok": True, "reply": "pong", "frame_wire_versions": [1, 2]}

# A SUB socket in its own process. ZeroMQ subscriptions reach the publisher asynchronously, so the test keeps
# publishing "probe" records until the subscriber says it got one; "end" closes a run. It prints one JSON list of
# [frame count, topic, record, receive time (CLOCK_MONOTONIC ns, comparable across processes on Linux)].
SUBSCRIBER = r"""
import json, sys, time, zmq
args = json.loads(sys.argv[1])
sub = zmq.Context().socket(zmq.SUB)
sub.setsockopt(zmq.LINGER, 0)
if args["rcvhwm"]:
    sub.setsockopt(zmq.RCVHWM, args["rcvhwm"])
sub.setsockopt(zmq.RCVTIMEO, args["timeout_ms"])
sub.connect(args["endpoint"])
for prefix in args["prefixes"]:
    sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
while not json.loads(sub.recv_multipart()[-1]).get("probe"):
    pass
print("synced", flush=True)
if args["pause"]:
    sys.stdin.readline()
got = []
try:
    while True:
        frames = sub.recv_multipart()
        now = time.monotonic_ns()
        record = json.loads(frames[-1])
        if record.get("end"):
            break
        if not record.get("probe"):
            got.append([len(frames), frames[0].decode(), record, now])
except zmq.Again:
    pass
print(json.dumps(got), flush=True)
"""


class SubscriberProcess:
    def __init__(self, endpoint: str, prefixes: list[str], rcvhwm: int = 0, pause: bool = False,
                 timeout_ms: int = 10_000):
        args = {"endpoint": endpoint, "prefixes": prefixes, "rcvhwm": rcvhwm, "pause": pause,
                "timeout_ms": timeout_ms}
        self.proc = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, json.dumps(args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)

    def sync(self, output: ZmqOutput, probe: dict, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output.write_record({**probe, "probe": True})
            try:
                line = self._lines.get(timeout=0.02)
            except queue.Empty:
                continue
            assert line.strip() == "synced", line
            return
        raise AssertionError(f"subscriber never received a probe (exit code {self.proc.poll()})")

    def resume(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 20.0) -> list:
        received = json.loads(self._lines.get(timeout=timeout))
        assert self.proc.wait(timeout) == 0
        return received

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def make_output():
    opened: list[ZmqOutput] = []

    def make(**fields) -> ZmqOutput:
        fields.setdefault("endpoint", ANY_PORT)
        fields.setdefault("control_endpoint", None)
        output = ZmqOutput(ZmqOutputConfig(**fields), fields.get("id") or "zmq")
        output.open(RuntimeContext())
        opened.append(output)
        return output

    yield make
    for output in opened:
        output.close()


@pytest.fixture
def subscriber():
    started: list[SubscriberProcess] = []

    def start(*args, **kwargs) -> SubscriberProcess:
        started.append(SubscriberProcess(*args, **kwargs))
        return started[-1]

    yield start
    for sub in started:
        sub.kill()


def detection(source: str, frame: int, n_boxes: int = 1, **extra) -> dict:
    boxes = [{"class_id": 2, "label": "car", "score": 0.8123, "bbox": [12.0, 80.5, 140.2 + i, 170.0]}
             for i in range(n_boxes)]
    return {"type": "detections", "source": source, "frame": frame, "stamp": 1764233000.123456, "age_ms": 24.1,
            "model": "yolo", "status": "ok", "infer_ms": 17.3, "detections": boxes, **extra}


def request(endpoint: str, frames: list[bytes], timeout_ms: int = 3000) -> dict:
    """One REQ round trip; a missing reply fails the test instead of hanging it."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    try:
        sock.connect(endpoint)
        sock.send_multipart(frames)
        return json.loads(sock.recv())
    finally:
        sock.close()


def command(endpoint: str, cmd: str, **fields) -> dict:
    return request(endpoint, [json.dumps({"cmd": cmd, **fields}).encode()])


# -- publishing ------------------------------------------------------------------------------------------


def test_subscriber_process_gets_detections_and_heartbeats_with_topics(make_output, subscriber):
    output = make_output()
    sub = subscriber(output.bound_endpoints["pub"], ["detections/", "heartbeat"])
    sub.sync(output, {"type": "heartbeat"})
    sent = [detection("cam0", 0), detection("cam1", 0, n_boxes=0), detection("cam0", 1, n_boxes=3)]
    for record in sent:
        output.write_record(record)
    output.heartbeat({"cycle": 7, "state": "OK"})  # the supervisor's body has no `type`: the topic still says it
    output.write_record({"type": "heartbeat", "cycle": 8, "state": "DEGRADED"})
    output.write_record(detection("cam0", 99, end=True))
    received = sub.result()
    assert [(n, topic) for n, topic, _, _ in received] == [
        (2, "detections/cam0"), (2, "detections/cam1"), (2, "detections/cam0"), (2, "heartbeat"), (2, "heartbeat")]
    assert [r for _, _, r, _ in received[:3]] == sent
    assert received[3][2] == {"cycle": 7, "state": "OK"}
    assert received[4][2] == {"type": "heartbeat", "cycle": 8, "state": "DEGRADED"}
    assert output.dropped == 0


def test_classification_and_dense_results_get_their_own_topics_per_source(make_output, subscriber):
    output = make_output()
    sub = subscriber(output.bound_endpoints["pub"], ["classifications/", "dense/", "detections/cam0"])
    sub.sync(output, detection("cam0", -1))
    classes = {**detection("scanner", 0), "type": "classifications", "classifications": [
        {"class_id": 1, "label": "90", "score": 0.92}]}
    dense = {**detection("cam2", 0), "type": "dense", "dense": {"task": "saliency", "peak": 0.99, "peak_xy": [4, 5]}}
    for record in (classes, dense):
        record.pop("detections")
        output.write_record(record)
    output.write_record(detection("cam0", 99, end=True))
    received = sub.result()
    assert [(topic, r) for _, topic, r, _ in received] == [("classifications/scanner", classes), ("dense/cam2", dense)]


def test_topic_prefix_filter_keeps_other_sources_and_heartbeats_out(make_output, subscriber):
    output = make_output()
    sub = subscriber(output.bound_endpoints["pub"], ["detections/cam0"])
    sub.sync(output, detection("cam0", -1))
    for frame in range(5):
        output.write_record(detection("cam0", frame))
        output.write_record(detection("cam1", frame))
        output.heartbeat({"type": "heartbeat", "cycle": frame})
    output.write_record(detection("cam0", 99, end=True))
    received = sub.result()
    assert {topic for _, topic, _, _ in received} == {"detections/cam0"}
    assert [r["frame"] for _, _, r, _ in received] == [0, 1, 2, 3, 4]


def test_heartbeat_false_keeps_heartbeats_off_this_output(make_output, subscriber):
    output = make_output(heartbeat=False)
    sub = subscriber(output.bound_endpoints["pub"], [""])
    sub.sync(output, detection("cam0", -1))
    output.heartbeat({"type": "heartbeat", "cycle": 1})
    output.write_record(detection("cam0", 0))
    output.write_record(detection("cam0", 99, end=True))
    assert [topic for _, topic, _, _ in sub.result()] == ["detections/cam0"]


def test_publish_without_any_subscriber_never_blocks(make_output):
    output = make_output()
    record = detection("cam0", 0, n_boxes=5)
    start = time.perf_counter()
    for _ in range(10_000):
        output.write_record(record)
    elapsed = time.perf_counter() - start
    assert output.published + output.dropped == 10_000
    assert elapsed < 5.0, f"10 000 publishes took {elapsed:.2f} s"


def test_slow_subscriber_loses_messages_but_never_blocks_publish(make_output, subscriber):
    output = make_output(sndhwm=100)
    assert output._pub.getsockopt(zmq.SNDHWM) == 100
    # this subscriber reads one probe and then nothing until told; its own queue holds 10 messages
    sub = subscriber(output.bound_endpoints["pub"], ["detections/"], rcvhwm=10, pause=True, timeout_ms=1500)
    sub.sync(output, detection("cam0", -1))
    published_before = output.published
    start = time.perf_counter()
    for frame in range(10_000):  # ~2.5 KB each: 25 MB, far more than ZeroMQ's and the kernel's buffers hold
        output.write_record(detection("cam0", frame, n_boxes=30))
    elapsed = time.perf_counter() - start
    sub.resume()
    received = sub.result()
    frames = [r["frame"] for _, _, r, _ in received]
    print(f"\nstalled subscriber: 10 000 publishes in {elapsed:.2f} s, {len(frames)} arrived")
    assert elapsed < 5.0, f"10 000 publishes to a stalled subscriber took {elapsed:.2f} s"
    assert output.published - published_before + output.dropped == 10_000
    # dropped by ZeroMQ beyond the high-water marks, not queued without bound; what arrives is in order
    assert 0 < len(frames) < 10_000
    assert frames == sorted(frames)


def test_publish_from_many_threads_keeps_messages_whole(make_output, subscriber):
    output = make_output(sndhwm=100_000)  # nothing may be dropped here: every message is checked
    sub = subscriber(output.bound_endpoints["pub"], ["detections/"])
    sub.sync(output, detection("cam0", -1))
    n_threads, per_thread = 4, 2000
    barrier = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        barrier.wait()
        try:
            for frame in range(per_thread):
                output.write_record(detection(f"cam{index}", frame, n_boxes=index))
                if frame % 100 == 0:
                    output.heartbeat({"type": "heartbeat", "cycle": frame})
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join()
    output.write_record(detection("cam0", -2, end=True))
    received = sub.result()
    assert not errors
    assert len(received) == n_threads * per_thread
    for n, topic, record, _ in received:
        assert n == 2 and topic == f"detections/{record['source']}"
        assert len(record["detections"]) == int(record["source"][3:])
    for index in range(n_threads):
        frames = [r["frame"] for _, _, r, _ in received if r["source"] == f"cam{index}"]
        assert frames == list(range(per_thread))


def test_loopback_latency_to_a_subscriber_process(make_output, subscriber):
    output = make_output(sndhwm=10_000)
    sub = subscriber(output.bound_endpoints["pub"], ["detections/"])
    sub.sync(output, detection("cam0", -1))
    n = 1000
    for frame in range(n):
        record = detection("cam0", frame, n_boxes=5)
        record["sent_ns"] = time.monotonic_ns()
        output.write_record(record)
        time.sleep(0.001)  # paced like a camera, so this measures latency, not queueing behind a burst
    output.write_record(detection("cam0", -2, end=True))
    received = sub.result()
    assert len(received) == n
    latencies_us = sorted((now - r["sent_ns"]) / 1000 for _, _, r, now in received)
    median = statistics.median(latencies_us)
    p99 = latencies_us[int(0.99 * n) - 1]
    print(f"\nloopback latency over {n} messages: median {median:.0f} us, p99 {p99:.0f} us")
    assert median < 50_000


# -- control socket --------------------------------------------------------------------------------------


def test_ping_is_built_in_and_unknown_commands_get_an_error_reply(make_output):
    output = make_output(control_endpoint=ANY_PORT)
    control = output.bound_endpoints["control"]
    assert command(control, "ping") == PONG
    reply = command(control, "reset")
    assert reply["ok"] is False and "unknown command 'reset'" in reply["error"]
    assert output.control_errors == 1 and output.control_requests == 2


def test_registered_reset_handler_is_called_from_another_process(make_output):
    output = make_output(control_endpoint=ANY_PORT)
    calls = []

    def handler(cmd: str, req: dict) -> dict:
        calls.append((cmd, req, threading.current_thread().name))
        if cmd == "reset":
            return {"reset": True, "state": "OK"}
        raise UnknownCommand(cmd)

    output.set_control_handler(handler, commands=["reset", "status"])
    client = (
        "import json, sys, zmq\n"
        "s = zmq.Context().socket(zmq.REQ); s.setsockopt(zmq.RCVTIMEO, 5000); s.connect(sys.argv[1])\n"
        "for req in ({'cmd': 'reset', 'by': 'operator'}, {'cmd': 'status'}, {'cmd': 'fly'}, {'cmd': 'ping'}):\n"
        "    s.send_json(req); print(json.dumps(s.recv_json()))\n"
    )
    done = subprocess.run([sys.executable, "-c", client, output.bound_endpoints["control"]], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert replies[0] == {"ok": True, "reset": True, "state": "OK"}
    assert replies[1]["ok"] is False and "unknown command 'status'" in replies[1]["error"]  # handler refused
    assert replies[2] == {"ok": False, "error": "unknown command 'fly'; known commands: ping, reset, status"}
    assert replies[3] == PONG
    assert [(c, r) for c, r, _ in calls] == [("reset", {"cmd": "reset", "by": "operator"}),
                                             ("status", {"cmd": "status"})]
    assert all(name.startswith("edgeinfer-zmq-") for _, _, name in calls)
    assert output.control_errors == 2


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([b"\xff\xfe not json"], "not valid JSON"),
        ([b"{\"cmd\": "], "not valid JSON"),
        ([b"[1, 2]"], "must be a JSON object"),
        ([b"\"ping\""], "must be a JSON object"),
        ([b"{\"command\": \"ping\"}"], "string \"cmd\" field"),
        ([b"{\"cmd\": 5}"], "string \"cmd\" field"),
        ([b"{\"cmd\": \"ping\"}", b"extra"], "got 2 frames"),
        ([b""], "not valid JSON"),
        ([json.dumps({"cmd": "ping", "pad": "x" * MAX_REQUEST_BYTES}).encode()], "the limit is 65536"),
    ],
)
def test_malformed_requests_get_error_replies_and_the_socket_keeps_serving(make_output, frames, error):
    output = make_output(control_endpoint=ANY_PORT)
    control = output.bound_endpoints["control"]
    reply = request(control, frames)
    assert reply["ok"] is False and error in reply["error"], reply
    assert command(control, "ping") == PONG
    assert output.control_errors == 1


def test_handler_exception_and_bad_replies_become_error_replies(make_output):
    output = make_output(control_endpoint=ANY_PORT)

    def handler(cmd: str, req: dict):
        if cmd == "reset":
            raise RuntimeError("supervisor not started")
        if cmd == "status":
            return ["not", "an", "object"]
        if cmd == "odd":
            return {"value": object()}
        if cmd == "refuse":
            return {"ok": False, "error": "not now"}
        return None

    output.set_control_handler(handler)
    assert command(output.bound_endpoints["control"], "reset") == {
        "ok": False, "error": "command 'reset' failed: RuntimeError: supervisor not started"}
    assert "not an object" in command(output.bound_endpoints["control"], "status")["error"]
    assert "not JSON-serializable" in command(output.bound_endpoints["control"], "odd")["error"]
    assert "unknown command 'other'" in command(output.bound_endpoints["control"], "other")["error"]
    assert command(output.bound_endpoints["control"], "refuse") == {"ok": False, "error": "not now"}
    assert command(output.bound_endpoints["control"], "ping")["ok"] is True
    assert output.control_errors == 5 and output.control_requests == 6


def test_a_request_beyond_the_hard_limit_drops_only_that_client(make_output):
    output = make_output(control_endpoint=ANY_PORT)
    control = output.bound_endpoints["control"]
    with pytest.raises(zmq.Again):  # ZeroMQ cuts the connection (MAXMSGSIZE): no reply to wait for
        request(control, [b"x" * (2 * 1024 * 1024)], timeout_ms=500)
    assert command(control, "ping") == PONG


# -- lifecycle -------------------------------------------------------------------------------------------


def test_close_is_prompt_and_frees_the_ports(make_output, subscriber):
    output = make_output(control_endpoint=ANY_PORT)
    endpoints = dict(output.bound_endpoints)
    sub = subscriber(endpoints["pub"], ["detections/"], rcvhwm=10, pause=True)
    sub.sync(output, detection("cam0", -1))
    for frame in range(1000):  # leave messages queued for the subscriber: linger 0 must discard them
        output.write_record(detection("cam0", frame, n_boxes=20))
    start = time.perf_counter()
    output.close()
    assert time.perf_counter() - start < 1.0
    output.write_record(detection("cam0", 0))  # after close: ignored, not a crash
    again = make_output(endpoint=endpoints["pub"], control_endpoint=endpoints["control"])
    assert again.bound_endpoints == endpoints
    assert command(endpoints["control"], "ping")["ok"] is True


def test_close_within_one_second_while_a_handler_hangs(make_output):
    output = make_output(control_endpoint=ANY_PORT)
    entered, release = threading.Event(), threading.Event()

    def handler(cmd: str, req: dict) -> dict:
        entered.set()
        release.wait(10)
        return {}

    output.set_control_handler(handler)
    endpoint = output.bound_endpoints["control"]
    outcome: list = []  # the reply may or may not get out before the socket closes; the client must not hang
    client = threading.Thread(target=lambda: outcome.append(_reply_or_error(endpoint)))
    client.start()
    assert entered.wait(5)
    thread = output._control_thread
    start = time.perf_counter()
    output.close()
    assert time.perf_counter() - start < 1.0
    release.set()
    thread.join(5)  # the thread closes its socket and terminates the context itself
    assert not thread.is_alive()
    client.join(5)
    assert len(outcome) == 1


def _reply_or_error(endpoint: str) -> object:
    try:
        return command(endpoint, "reset")
    except zmq.ZMQError as exc:
        return exc


def test_address_in_use_is_an_output_error_naming_the_endpoint(make_output):
    first = make_output(control_endpoint=ANY_PORT)
    taken = first.bound_endpoints["pub"]
    second = ZmqOutput(ZmqOutputConfig(id="arm_cam", endpoint=taken, control_endpoint=None), "arm_cam")
    with pytest.raises(OutputError, match=f"output 'arm_cam': cannot bind PUB socket to {taken}: .*in use"):
        second.open(RuntimeContext())
    threads_before = threading.active_count()
    control = first.bound_endpoints["control"]
    third = ZmqOutput(ZmqOutputConfig(endpoint=ANY_PORT, control_endpoint=control), "zmq")
    with pytest.raises(OutputError, match=f"output 'zmq': cannot bind control \\(REP\\) socket to {control}"):
        third.open(RuntimeContext())
    assert threading.active_count() == threads_before  # no control thread left behind
    third.close()  # harmless after a failed open


def test_connect_mode_publishes_to_a_bound_subscriber(make_output):
    # robots with a broker or a single consumer bind the SUB side and let the daemon connect
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, 100)
    sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    try:
        output = make_output(endpoint=f"tcp://127.0.0.1:{port}", bind=False)
        assert output.bound_endpoints["pub"] == f"tcp://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            output.heartbeat({"type": "heartbeat", "cycle": 1})
            try:
                assert sub.recv_multipart() == [b"heartbeat", b'{"type":"heartbeat","cycle":1}']
                break
            except zmq.Again:
                continue
        else:
            raise AssertionError("nothing arrived over the connected PUB socket")
    finally:
        sub.close()


def test_missing_pyzmq_is_reported_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "zmq", None)  # makes `import zmq` fail like on a bare box
    output = ZmqOutput(ZmqOutputConfig(), "zmq")
    with pytest.raises(MissingDependency, match=r"pip install pyzmq \(or '\.\[zmq\]' from the edgeinfer checkout\)"):
        output.open(RuntimeContext())


def test_importing_the_outputs_does_not_import_pyzmq():
    code = "import sys, edgeinfer.outputs, edgeinfer.config; print('zmq' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# -- configuration ---------------------------------------------------------------------------------------


def config_with(output: dict):
    data = {"sources": [{"id": "cam0", "type": "synthetic"}],
            "models": [{"id": "det", "path": "m.onnx", "sources": ["cam0"]}],
            "outputs": [output]}
    return parse_config(yaml.safe_dump(data))


def test_config_union_accepts_zmq_with_defaults():
    config = config_with({"type": "zmq", "id": "robot"})
    out = config.outputs[0]
    assert isinstance(out, ZmqOutputConfig)
    assert (out.endpoint, out.bind, out.control_endpoint, out.sndhwm) == (
        "tcp://*:5560", True, "tcp://127.0.0.1:5561", 100)
    assert isinstance(create_output(out), ZmqOutput)
    assert config_with({"type": "zmq", "endpoint": "ipc:///tmp/det", "control_endpoint": None}).outputs[0]


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"endpoint": "udp://*:5560"}, "outputs[0].endpoint", "must start with tcp://, ipc:// or inproc://"),
        ({"endpoint": "localhost:5560"}, "outputs[0].endpoint", "must start with tcp://, ipc:// or inproc://"),
        ({"endpoint": "tcp://*"}, "outputs[0].endpoint", "must look like tcp://HOST:PORT"),
        ({"endpoint": "tcp://*:70000"}, "outputs[0].endpoint", "outside 1..65535"),
        ({"control_endpoint": "ipc://"}, "outputs[0].control_endpoint", "names no address"),
        ({"bind": False}, "outputs[0]", "needs a host"),
        ({"sndhwm": 0}, "outputs[0].sndhwm", "greater than or equal to 1"),
        ({"endpoint": "tcp://127.0.0.1:5561"}, "outputs[0]", "different addresses"),
        ({"endpiont": "tcp://*:1"}, "outputs[0].endpiont", "unknown key; allowed keys:"),
    ],
)
def test_config_rejects_bad_zmq_settings_with_a_clear_message(fields, where, message):
    with pytest.raises(ConfigError) as info:
        config_with({"type": "zmq", **fields})
    text = str(info.value)
    assert f"{where}: " in text and message in text, text
