"""A ROS 2 peer for the tests, run in its own process (never inside pytest): subscribes to topics with the
QoS it is told (`save_data`: a folder each message's `data` payload is written to), publishes video frames as
image messages, calls services; prints one JSON event per line.

    python ros_peer.py '{"subscribe": [...], "publish_images": {...}}'   (commands on stdin: reset, quit)
"""

from __future__ import annotations

import array
import itertools
import json
import sys
import threading
import time

import cv2
import numpy as np
import rclpy
from rclpy.event_handler import SubscriptionEventCallbacks, qos_policy_name_from_kind
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

_out_lock = threading.Lock()
_arrived: set[int] = set()  # header stamps (ns) of messages received, for lockstep publishing
_arrived_cond = threading.Condition()


def emit(event: dict) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def to_dict(msg):
    if hasattr(msg, "get_fields_and_field_types"):
        out = {}
        for name in msg.get_fields_and_field_types():
            value = getattr(msg, name)
            if name == "data" and isinstance(value, (bytes, array.array, list)) and len(value) > 64:
                out[name] = {"len": len(value)}  # image payloads: the size is enough
            else:
                out[name] = to_dict(value)
        return out
    if isinstance(msg, (list, tuple)):
        return [to_dict(v) for v in msg]
    if isinstance(msg, array.array) or isinstance(msg, np.ndarray):
        return list(msg.tolist())
    if isinstance(msg, bytes):
        return list(msg)
    if isinstance(msg, float) and msg != msg:
        return None
    return msg


def load_type(name: str):
    package, kind, cls = name.split("/")
    module = __import__(f"{package}.{kind}", fromlist=[cls])
    return getattr(module, cls)


def qos(spec: dict) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=spec.get("depth", 10),
        reliability=(ReliabilityPolicy.BEST_EFFORT if spec.get("reliability") == "best_effort"
                     else ReliabilityPolicy.RELIABLE),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if spec.get("durability") == "transient_local"
                    else DurabilityPolicy.VOLATILE))


def image_message(frame: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    from sensor_msgs.msg import CompressedImage, Image

    if encoding in ("jpeg", "png"):
        msg = CompressedImage()
        msg.format = encoding
        msg.data = cv2.imencode(".jpg" if encoding == "jpeg" else ".png", frame)[1].tobytes()
    else:
        conversions = {"bgr8": None, "rgb8": cv2.COLOR_BGR2RGB, "mono8": cv2.COLOR_BGR2GRAY,
                       "rgba8": cv2.COLOR_BGR2RGBA, "bgra8": cv2.COLOR_BGR2BGRA}
        code = conversions[encoding]
        pixels = frame if code is None else cv2.cvtColor(frame, code)
        msg = Image()
        msg.height, msg.width = pixels.shape[:2]
        msg.encoding = encoding
        msg.step = pixels.shape[1] * (1 if pixels.ndim == 2 else pixels.shape[2])
        msg.data = pixels.tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def publish_images(node, spec: dict) -> None:
    """Frames of a video as image messages, at `fps`, each stamped with the time it is published."""
    from sensor_msgs.msg import CompressedImage, Image

    encodings = spec.get("encodings", ["bgr8"])
    compressed = encodings[0] in ("jpeg", "png")
    pub = node.create_publisher(CompressedImage if compressed else Image, spec["topic"], qos(spec.get("qos", {})))
    capture = cv2.VideoCapture(spec["video"])
    frames = []
    capture.set(cv2.CAP_PROP_POS_FRAMES, spec.get("start_frame", 0))
    while len(frames) < spec.get("frames", 50):
        ok, frame = capture.read()
        if not ok:
            break
        if spec.get("size"):
            frame = cv2.resize(frame, tuple(spec["size"]))
        frames.append(frame)
    capture.release()
    deadline = time.monotonic() + spec.get("wait_subscribers_s", 10)
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    # our side sees the match before the subscriber's side does: a sample sent at once can still be lost
    time.sleep(spec.get("settle_s", 0.0))
    period = 1.0 / spec.get("fps", 10)
    start = time.monotonic()
    for i in range(spec.get("count", len(frames))):
        frame = frames[i % len(frames)]
        encoding = encodings[i % len(encodings)]
        stamp_ns = time.time_ns()
        pub.publish(image_message(frame, encoding, stamp_ns, spec.get("frame_id", "camera")))
        emit({"event": "published", "topic": spec["topic"], "index": i, "stamp_ns": stamp_ns, "encoding": encoding})
        if spec.get("lockstep"):  # the next image only once this one came back (a stamp within 1 us)
            deadline = time.monotonic() + spec["lockstep"]
            with _arrived_cond:
                while (not any(abs(s - stamp_ns) <= 1000 for s in _arrived)
                       and _arrived_cond.wait(max(0.0, deadline - time.monotonic()))):
                    pass
            continue
        delay = start + (i + 1) * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    emit({"event": "published_all", "topic": spec["topic"]})


def main() -> None:
    spec = json.loads(sys.argv[1])
    rclpy.init()
    node = rclpy.create_node(spec.get("name", "edgeinfer_test_peer"))
    subscriptions = []
    for sub in spec.get("subscribe", []):
        name = sub["name"]

        save, numbers = sub.get("save_data"), itertools.count()

        def on_message(msg, name=name, save=save, numbers=numbers):
            event = {"event": "msg", "name": name, "t": time.time(), "msg": to_dict(msg)}
            if save and hasattr(msg, "data"):  # the payload to a file: too big for a JSON line
                path = f"{save}/{name}_{next(numbers)}.bin"
                with open(path, "wb") as f:
                    f.write(bytes(msg.data))
                event["data_file"] = path
            emit(event)
            stamp = getattr(getattr(msg, "header", None), "stamp", None)
            if stamp is not None:
                with _arrived_cond:
                    _arrived.add(stamp.sec * 1_000_000_000 + stamp.nanosec)
                    _arrived_cond.notify_all()

        def on_incompatible(info, name=name):
            emit({"event": "incompatible_qos", "name": name,
                  "policy": str(qos_policy_name_from_kind(info.last_policy_kind))})

        subscriptions.append(node.create_subscription(
            load_type(sub["type"]), sub["topic"], on_message, qos(sub.get("qos", {})),
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=on_incompatible)))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    emit({"event": "ready"})
    for images in spec.get("publish_images", []):
        threading.Thread(target=publish_images, args=(node, images), daemon=True).start()
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        if command["cmd"] == "call":
            from std_srvs.srv import Trigger

            client = node.create_client(Trigger, command["service"])
            if not client.wait_for_service(timeout_sec=10):
                emit({"event": "call", "service": command["service"], "error": "service not available"})
                continue
            future = client.call_async(Trigger.Request())
            deadline = time.monotonic() + 10
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            result = future.result() if future.done() else None
            emit({"event": "call", "service": command["service"],
                  "success": None if result is None else result.success,
                  "message": None if result is None else result.message})
        if command["cmd"] == "lifecycle":  # lifecycle_msgs/srv/ChangeState with a transition label
            from lifecycle_msgs.msg import Transition
            from lifecycle_msgs.srv import ChangeState

            client = node.create_client(ChangeState, command["service"])
            ok = client.wait_for_service(timeout_sec=10)
            request = ChangeState.Request()
            request.transition.id = getattr(Transition, "TRANSITION_" + command["transition"].upper())
            future = client.call_async(request) if ok else None
            deadline = time.monotonic() + 10
            while future is not None and not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            emit({"event": "lifecycle", "transition": command["transition"],
                  "success": bool(future is not None and future.done() and future.result().success)})
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
