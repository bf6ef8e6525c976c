"""ROS 2 output: per model one message for every processed frame -- vision_msgs/Detection2DArray (detectors),
vision_msgs/Classification (classifiers: top-k ObjectHypothesis) or sensor_msgs/Image (dense maps in source
pixels: segmentation mono8/mono16 class ids, saliency/depth 32FC1) -- and a transient-local
vision_msgs/LabelInfo, optionally the annotated image at a fixed rate; the watchdog heartbeat
(edgeinfer_msgs/Heartbeat) every cycle; the safe-stop reset as a std_srvs/Trigger service; /diagnostics at
1 Hz; incompatible-QoS events logged and reported on /diagnostics, naming the policy.

A thin adapter: the node, context and executor belong to the pipeline's RosRuntime (edgeinfer.ros.runtime),
the message contents come from pure functions (edgeinfer.ros.convert). rclpy and the interface packages are
imported in `open()`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...instances import detection_id
from ...lazy import lazy_import
from ...logutil import RateLimitedLog
from ...outputs.base import Output, OutputError
from ...results import Classifications, DenseMap, Detections, Payload, Result
from . import INTERFACES_HINT
from . import convert as cv
from .instances import InstanceTopics
from .runtime import policy_name, qos_profile
from .schema import Ros2OutputConfig

if TYPE_CHECKING:
    from ...runtime import CommandRegistry, ModelInfo, RuntimeContext
    from .runtime import RosRuntime

log = logging.getLogger(__name__)

# at close, how long reliable subscribers get to acknowledge the last results (in all, not per publisher)
CLOSE_FLUSH_S = 1.0








# How each payload type goes out, in one place: the config key of its topic (and its QoS under `qos`), the
# vision_msgs/sensor_msgs message and the method that fills it. A payload that subclasses one of these (e.g.
# tracks, a kind of Detections) goes out as its base unless it has an entry of its own.
RESULT_MESSAGES: dict[type[Payload], tuple[str, str, str]] = {
    Detections: ("detections_topic", "Detection2DArray", "detection_array"),
    Classifications: ("classifications_topic", "Classification", "classification"),
    DenseMap: ("dense_topic", "Image", "dense_image"),
}


def result_message(payload_type: type[Payload]) -> tuple[str, str, str]:
    for cls in payload_type.__mro__:
        if cls in RESULT_MESSAGES:
            return RESULT_MESSAGES[cls]
    raise OutputError(f"the ros2 output has no message for {payload_type.__name__} results")


class _ModelTopics:
    def __init__(self, payload_type: type[Payload], results: Any, label_info: Any, image: Any | None, array: Any):
        self.payload_type = payload_type
        self.known = True  # False: the decoder comes from the model's metadata; its first result tells the kind
        self.results = results  # the publisher of this model's payload type
        self.label_info = label_info
        self.labels: list[str] = []  # the names LabelInfo carries
        self.image = image
        self.next_image = 0.0  # monotonic time the next annotated image may go
        # Messages reused frame after frame: publish() serialises at once, and building an
        # ObjectHypothesisWithPose (its 36-float covariance) costs ~150 us, far more than filling one.
        # Only this model's publish thread touches them.
        self.array = array
        self.pool: list[Any] = []


class Ros2Output(Output):
    config: Ros2OutputConfig

    def __init__(self, config: Ros2OutputConfig, output_id: str):
        super().__init__(config, output_id)
        self.runtime: RosRuntime | None = None
        self.skipped = 0  # results not published: invalid/error status, or lifecycle inactive
        self.images = 0
        self.qos_events: deque[str] = deque(maxlen=50)
        self._topics: dict[str, _ModelTopics] = {}
        self._heartbeat_pub: Any = None
        self._diag_pub: Any = None
        self._timer: Any = None
        # held while /diagnostics is built and published (executor thread) and while close() takes the timer
        # and publishers away: a callback in flight finishes first, later ones see the output closed
        self._diag_lock = threading.Lock()
        self._closing = False
        self._service: Any = None
        self._commands: CommandRegistry | None = None
        self._last_heartbeat: dict[str, Any] | None = None
        self._msgs: Any = None
        self._events: Callable[[str], Any] = lambda topic: None
        self._lock = threading.Lock()
        self._rlog = RateLimitedLog(log)
        self._instances: InstanceTopics | None = None  # masks and keypoints beside the boxes

    # -- lifecycle ---------------------------------------------------------------------------------------
    def open(self, ctx: RuntimeContext) -> None:
        """Publishers on the process's shared node for every model of the catalogue: a model whose payload
        type the config does not declare (the decoder comes from its metadata) starts as a detector and is
        corrected by `on_model_loaded`."""
        self.runtime = ctx.ros()
        if self.runtime.node is None:
            raise OutputError(f"output '{self.id}': the ROS runtime has no node")
        self._commands = ctx.commands
        m = self._msgs = _import_messages(self.config.heartbeat)
        node = self.runtime.node
        from rclpy.event_handler import PublisherEventCallbacks

        def events(topic: str) -> Any:
            return PublisherEventCallbacks(incompatible_qos=lambda info: self._incompatible(topic, info))

        self._events = events
        self._instances = InstanceTopics(node, self.config, events)
        q = self.config.qos
        for model_id, info in ctx.catalogue.items():
            labels = info.labels
            name = cv.ros_name(model_id)
            payload_type = info.payload_type or Detections
            results = self._result_publisher(model_id, payload_type)
            info_topic = self.config.label_info_topic.replace("{model}", name)
            label_info = node.create_publisher(m.LabelInfo, info_topic, qos_profile(q.label_info),
                                               event_callbacks=events(info_topic))
            image = None
            if self.config.image.enabled:
                topic = self.config.image.topic.replace("{model}", name)
                kind = m.Image
                if self.config.image.format == "jpeg":
                    topic, kind = topic + "/compressed", m.CompressedImage
                image = node.create_publisher(kind, topic, qos_profile(q.image), event_callbacks=events(topic))
            self._topics[model_id] = _ModelTopics(payload_type, results, label_info, image,
                                                  self._reused_message(payload_type))
            self._topics[model_id].known = info.payload_type is not None
            self._topics[model_id].labels = list(labels)
            label_info.publish(self._label_info(labels))
            self._instances.ensure(model_id, info.payload_type)
        if self.config.heartbeat:
            self._heartbeat_pub = node.create_publisher(m.Heartbeat, self.config.heartbeat_topic,
                                                        qos_profile(q.heartbeat),
                                                        event_callbacks=events(self.config.heartbeat_topic))
        if self.config.diagnostics:
            self._diag_pub = node.create_publisher(m.DiagnosticArray, self.config.diagnostics_topic,
                                                   qos_profile(q.diagnostics),
                                                   event_callbacks=events(self.config.diagnostics_topic))
            self._timer = node.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)
        if self.config.reset_service is not None:
            self._service = node.create_service(m.Trigger, self.config.reset_service, self._on_reset)
        if self.config.wait_for_subscribers:
            self._wait_for_subscribers()
        log.info("output '%s': node %s publishing %s", self.id, self.runtime.name,
                 ", ".join(t.results.topic_name for t in self._topics.values()))

    def _result_publisher(self, model_id: str, payload_type: type[Payload]) -> Any:
        """The publisher of one model's results: the message type and topic of its payload type."""
        topic_key, message_name, _ = result_message(payload_type)
        message = getattr(self._msgs, message_name)
        if message is None:  # an older vision_msgs (before Humble) has Classification2D, not Classification
            raise OutputError(f"output '{self.id}': model '{model_id}' is a classifier but this vision_msgs has no "
                              "Classification message (Humble or later is needed)")
        topic = getattr(self.config, topic_key).replace("{model}", cv.ros_name(model_id))
        qos = getattr(self.config.qos, payload_type.kind)
        return self.runtime.node.create_publisher(message, topic, qos_profile(qos), event_callbacks=self._events(topic))

    def _reused_message(self, payload_type: type[Payload]) -> Any:
        return getattr(self._msgs, result_message(payload_type)[1])()

    def on_model_loaded(self, info: ModelInfo) -> None:
        """Called by the pipeline once a model is loaded, before any frame: names read from the model file
        (Ultralytics `names`, Paddle `character`) replace the configured ones in LabelInfo (transient local:
        late subscribers get the new one), and a model whose decoder came from its metadata gets the topic
        of its kind now."""
        topics = self._topics.get(info.id)
        if topics is None:
            return
        if info.labels and info.labels != topics.labels:
            topics.labels = list(info.labels)
            topics.label_info.publish(self._label_info(topics.labels))
        if info.payload_type is not None and (not topics.known or info.payload_type is not topics.payload_type):
            self._learn_kind(topics, info.id, info.payload_type)

    def _learn_kind(self, topics: _ModelTopics, model_id: str, payload_type: type[Payload]) -> None:
        """A model whose decoder comes from its metadata (no `decoder` in the config) says its kind once
        loaded (else at its first result): a classifier's publisher replaces the detections one assumed at
        open(); with wait_for_subscribers it waits for its subscribers here, as open() does for the others."""
        topics.known = True
        if result_message(payload_type) != result_message(topics.payload_type):
            old = topics.results
            topics.results = self._result_publisher(model_id, payload_type)
            topics.array, topics.pool = self._reused_message(payload_type), []
            self.runtime.node.destroy_publisher(old)
        topics.payload_type = payload_type
        self._instances.ensure(model_id, payload_type)
        log.info("output '%s': model '%s' publishes %s (decoder from its metadata) on %s", self.id, model_id,
                 payload_type.kind, topics.results.topic_name)
        if self.config.wait_for_subscribers:
            self._wait_for_subscribers({model_id: topics})

    def _wait_for_subscribers(self, topics: dict[str, _ModelTopics] | None = None) -> None:
        if topics is None:  # at open(): the models whose kind (so topic) the config declares
            topics = {k: t for k, t in self._topics.items() if t.known}
        deadline = time.monotonic() + self.config.wait_timeout_s
        want = self.config.wait_for_subscribers
        while time.monotonic() < deadline:
            if all(t.results.get_subscription_count() >= want for t in topics.values()):
                return
            time.sleep(0.02)
        counts = {k: t.results.get_subscription_count() for k, t in topics.items()}
        raise OutputError(f"output '{self.id}': wait_for_subscribers={want} not reached within "
                          f"{self.config.wait_timeout_s:g} s (subscribers per model: {counts})")

    def close(self) -> None:
        node = self.runtime.node if self.runtime is not None else None
        if node is None:
            return
        with self._diag_lock:  # timers stop before any publisher goes (the /diagnostics shutdown race)
            self._closing = True
            if self._timer is not None:
                self._timer.cancel()
        self._flush_reliable(CLOSE_FLUSH_S)
        for entity in [self._timer, self._service, self._heartbeat_pub, self._diag_pub,
                       *[p for t in self._topics.values() for p in (t.results, t.label_info, t.image)],
                       *(self._instances.publishers() if self._instances is not None else [])]:
            if entity is None:
                continue
            try:
                if entity is self._timer:
                    node.destroy_timer(entity)
                elif entity is self._service:
                    node.destroy_service(entity)
                else:
                    node.destroy_publisher(entity)
            except Exception as exc:  # the node may already be gone at shutdown
                log.debug("output '%s': destroying %s: %s", self.id, entity, exc)
        self._topics.clear()
        if self._instances is not None:
            self._instances.forget()
        self._timer = self._service = self._heartbeat_pub = self._diag_pub = None

    def _flush_reliable(self, budget_s: float) -> None:
        """Give reliable subscribers the last results before the publishers go: a daemon that ends (a file
        processed to its end) would otherwise drop samples still in flight (large images go out in fragments).
        Bounded: a subscriber that never acknowledges costs at most `budget_s` in all."""
        try:
            from rclpy.duration import Duration
        except ImportError:
            return
        deadline = time.monotonic() + budget_s
        for topics in self._topics.values():
            # LabelInfo too: the names learned from the model are published late (once it is loaded), and a
            # subscriber matched by then must get them before the publisher goes
            for pub in (topics.results, topics.image, topics.label_info):
                wait = getattr(pub, "wait_for_all_acked", None)
                left = deadline - time.monotonic()
                if wait is None or left <= 0:
                    continue
                try:
                    wait(Duration(nanoseconds=int(left * 1e9)))
                except Exception as exc:  # best effort at shutdown
                    log.debug("output '%s': waiting for acknowledgements: %s", self.id, exc)

    # -- detections --------------------------------------------------------------------------------------
    def publish(self, result: Result) -> None:
        topics = self._topics.get(result.model)
        if topics is None:
            return
        if result.status != "ok" or not self.runtime.active.is_set():
            # An empty Detection2DArray would claim "nothing there": a frame whose detections are invalid
            # (safe stop) or failed is not published; the heartbeat and /diagnostics say why.
            self.skipped += 1
            return
        payload_type = type(result.payload)
        if not topics.known or payload_type is not topics.payload_type:
            self._learn_kind(topics, result.model, payload_type)
        fill = getattr(self, result_message(payload_type)[2])  # the one dispatch on the payload type
        message = fill(result, topics)
        topics.results.publish(message)
        self._instances.publish(result, message.header)  # masks, keypoints: stamped like the boxes
        self.published += 1
        if topics.image is not None and result.frame is not None:
            now = time.monotonic()
            if now >= topics.next_image and topics.image.get_subscription_count() > 0:
                topics.next_image = now + 1.0 / self.config.image.rate_hz
                topics.image.publish(self.annotated(result))
                self.images += 1

    def detection_array(self, result: Result, topics: _ModelTopics | None = None) -> Any:
        """The Detection2DArray of one result, filled into the model's reused messages (fresh ones without
        `topics`)."""
        m = self._msgs
        msg = topics.array if topics is not None else m.Detection2DArray()
        pool = topics.pool if topics is not None else []
        sec, nanosec = cv.seconds_to_stamp(result.stamp)
        header = msg.header
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        header.frame_id = result.frame_id
        label_in_id = self.config.label_in_class_id
        detections = result.payload.detections
        while len(pool) < len(detections):
            det = m.Detection2D()
            det.results = [m.ObjectHypothesisWithPose()]
            pool.append(det)
        for index, (det, d) in enumerate(zip(pool, detections)):
            det.header = header
            det.id = detection_id(d, index)  # the track id with tracking on
            cx, cy, sx, sy = cv.detection_values(d.bbox)
            box = det.bbox
            box.center.position.x, box.center.position.y = cx, cy
            box.size_x, box.size_y = sx, sy
            hyp = det.results[0].hypothesis
            hyp.class_id = cv.class_id_text(d.class_id, d.label, label_in_id)
            hyp.score = float(d.score)
        msg.detections = pool[:len(detections)]
        return msg

    def classification(self, result: Result, topics: _ModelTopics | None = None) -> Any:
        """vision_msgs/Classification of one result: header = capture stamp and frame_id, results[] = the
        decoder's top-k as ObjectHypothesis (class_id as text, score), best first."""
        m = self._msgs
        msg = topics.array if topics is not None else m.Classification()
        pool = topics.pool if topics is not None else []
        msg.header.stamp.sec, msg.header.stamp.nanosec = cv.seconds_to_stamp(result.stamp)
        msg.header.frame_id = result.frame_id
        values = cv.classification_values(result.payload.classifications, self.config.label_in_class_id)
        while len(pool) < len(values):
            pool.append(m.ObjectHypothesis())
        for hyp, (class_id, score) in zip(pool, values):
            hyp.class_id, hyp.score = class_id, score
        msg.results = pool[:len(values)]
        return msg

    def dense_image(self, result: Result, topics: _ModelTopics | None = None) -> Any:
        """sensor_msgs/Image of a dense result's map in source pixels: mono8/mono16 class ids (segmentation),
        32FC1 values (saliency, depth); header = capture stamp and frame_id."""
        msg = topics.array if topics is not None else self._msgs.Image()
        msg.header.stamp.sec, msg.header.stamp.nanosec = cv.seconds_to_stamp(result.stamp)
        msg.header.frame_id = result.frame_id
        height, width, encoding, big_endian, step, data = cv.dense_image_fields(result.payload.task, result.payload.map)
        msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = height, width, encoding, big_endian, step
        # bytes: one copy of the map, and rclpy serialises a bytes payload faster than an array('B')
        # (1.5-3.3 ms against 2.0-4.7 ms for a 640x480 32FC1 map: benchmarks/bench_ros2_results.py)
        msg.data = bytes(data)
        return msg

    def annotated(self, result: Result) -> Any:
        m = self._msgs
        boxes = result.payload.detections if isinstance(result.payload, Detections) else []
        image = cv.draw_detections(result.frame.pixels(), boxes)
        sec, nanosec = cv.seconds_to_stamp(result.stamp)
        if self.config.image.format == "jpeg":
            msg = m.CompressedImage()
            msg.format = "jpeg"
            msg.data = cv.encode_jpeg(image, self.config.image.jpeg_quality)
        else:
            msg = m.Image()
            msg.height, msg.width, msg.encoding, msg.step, msg.data = cv.bgr_to_image_fields(image)
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        msg.header.frame_id = result.frame_id
        return msg

    def _label_info(self, labels: list[str]) -> Any:
        m = self._msgs
        msg = m.LabelInfo()
        sec, nanosec = cv.seconds_to_stamp(time.time())
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        classes = []
        for i, name in enumerate(labels):
            vc = m.VisionClass()
            vc.class_id, vc.class_name = i, name
            classes.append(vc)
        msg.class_map = classes
        return msg

    # -- heartbeat, diagnostics, reset -------------------------------------------------------------------
    def heartbeat(self, record: dict[str, Any]) -> None:
        self._last_heartbeat = record
        if self._heartbeat_pub is None:
            return
        m = self._msgs
        v = cv.heartbeat_values(record)
        msg = m.Heartbeat()
        msg.header.stamp.sec, msg.header.stamp.nanosec = cv.seconds_to_stamp(v["stamp"])
        msg.header.frame_id = ""
        msg.cycle, msg.state, msg.state_name = v["cycle"], v["state"], v["state_name"]
        entities = []
        for e in v["entities"]:
            es = m.EntityStatus()
            for key, value in e.items():
                setattr(es, key, value)
            entities.append(es)
        msg.entities = entities
        msg.actions = v["actions"]
        msg.newest_frame_age_ms = v["newest_frame_age_ms"]
        msg.frame_age_sources, msg.frame_age_ms = v["frame_age_sources"], v["frame_age_ms"]
        msg.fps_models, msg.fps = v["fps_models"], v["fps"]
        self._heartbeat_pub.publish(msg)

    def _on_reset(self, request: Any, response: Any) -> Any:
        commands = self._commands
        if commands is None or "reset" not in commands.names:
            response.success, response.message = False, "edgeinfer is still starting"
            return response
        try:
            reply = commands.handle("reset", {}) or {}
            response.success = bool(reply.get("ok", False))
            response.message = str(reply.get("state") or reply.get("error") or reply.get("reply") or "")
        except Exception as exc:  # the caller must get an answer, whatever failed
            response.success, response.message = False, f"reset failed: {type(exc).__name__}: {exc}"
        log.warning("output '%s': reset service called: %s (%s)", self.id, response.success, response.message)
        return response

    def _incompatible(self, topic: str, info: Any) -> None:
        policy = policy_name(info)
        text = (f"incompatible QoS on {topic}: a subscriber requested a {policy} policy this publisher does "
                f"not offer ({info.total_count} so far)")
        self.qos_events.append(text)
        self._rlog.warning(f"qos:{topic}", "output '%s': %s", self.id, text)

    def _publish_diagnostics(self) -> None:
        try:
            self.publish_diagnostics()
        except Exception as exc:  # a timer callback must never take the executor down
            self._rlog.error("diag", "output '%s': /diagnostics failed: %s", self.id, exc)

    def publish_diagnostics(self) -> None:
        with self._diag_lock:
            if self._closing or self._diag_pub is None or self.runtime is None:
                return
            self._publish_diagnostics_locked(self._diag_pub)

    def _publish_diagnostics_locked(self, diag_pub: Any) -> None:
        m = self._msgs
        statuses = cv.diagnostic_statuses(self.runtime.config.node_name, self._last_heartbeat,
                                          self.runtime.stats(), self.runtime.backends(), list(self.qos_events),
                                          self.runtime.active.is_set())
        msg = m.DiagnosticArray()
        msg.header.stamp.sec, msg.header.stamp.nanosec = cv.seconds_to_stamp(time.time())
        hardware = socket.gethostname()
        out = []
        for name, level, message, values in statuses:
            st = m.DiagnosticStatus()
            st.level = bytes([level])
            st.name, st.message, st.hardware_id = name, message, hardware
            st.values = [m.KeyValue(key=k, value=v) for k, v in values]
            out.append(st)
        msg.status = out
        diag_pub.publish(msg)


class _Messages:
    pass


def _import_messages(heartbeat: bool) -> Any:
    """The message classes, imported lazily with a message that says how to get each package."""
    m = _Messages()
    vision = lazy_import("vision_msgs.msg", INTERFACES_HINT)
    sensor = lazy_import("sensor_msgs.msg", INTERFACES_HINT)
    diag = lazy_import("diagnostic_msgs.msg", INTERFACES_HINT)
    srv = lazy_import("std_srvs.srv", INTERFACES_HINT)
    for name in ("Detection2DArray", "Detection2D", "ObjectHypothesisWithPose", "LabelInfo", "VisionClass"):
        setattr(m, name, getattr(vision, name))
    # Humble and later; checked when a classifier model needs it
    m.Classification, m.ObjectHypothesis = getattr(vision, "Classification", None), vision.ObjectHypothesis
    m.Image, m.CompressedImage = sensor.Image, sensor.CompressedImage
    m.DiagnosticArray, m.DiagnosticStatus, m.KeyValue = diag.DiagnosticArray, diag.DiagnosticStatus, diag.KeyValue
    m.Trigger = srv.Trigger
    if heartbeat:
        own = lazy_import("edgeinfer_msgs.msg", INTERFACES_HINT)
        m.Heartbeat, m.EntityStatus = own.Heartbeat, own.EntityStatus
    return m
