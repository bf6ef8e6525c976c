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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from ..lazy import lazy_import
from ..logutil import RateLimitedLog
from ..ros import INTERFACES_HINT
from ..ros import convert as cv
from ..ros.config import QosConfig, check_topic
from ..schema import StrictModel
from .base import Output, OutputConfigBase, OutputError

if TYPE_CHECKING:
    from ..results import Result
    from ..ros.runtime import RosRuntime

log = logging.getLogger(__name__)

# at close, how long reliable subscribers get to acknowledge the last results (in all, not per publisher)
CLOSE_FLUSH_S = 1.0


class Ros2ImageConfig(StrictModel):
    enabled: bool = False
    rate_hz: float = Field(default=5.0, gt=0, le=120, description="at most this many annotated images per second")
    format: Literal["raw", "jpeg"] = Field(default="jpeg", description="raw: sensor_msgs/Image bgr8; jpeg: "
                                           "sensor_msgs/CompressedImage")
    jpeg_quality: int = Field(default=80, ge=1, le=100)
    topic: str = Field(default="~/{model}/annotated", description="raw topic; jpeg appends /compressed")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic(value, "topic")


class Ros2QosTopics(StrictModel):
    # reliable publishers match both reliable (default) and best-effort (sensor_data) subscribers
    detections: QosConfig = QosConfig()
    classifications: QosConfig = QosConfig()
    # reliable too: Fast DDS over UDP loses fragments of large best-effort images (docs/ros2.md)
    dense: QosConfig = QosConfig()
    label_info: QosConfig = QosConfig(durability="transient_local", depth=1)
    heartbeat: QosConfig = QosConfig()
    image: QosConfig = QosConfig(preset="sensor_data")
    diagnostics: QosConfig = QosConfig()


class Ros2OutputConfig(OutputConfigBase):
    type: Literal["ros2"] = "ros2"
    detections_topic: str = Field(default="~/{model}/detections", description="{model}: the model id, '-' as '_'")
    classifications_topic: str = Field(default="~/{model}/classifications", description="classifier models: "
                                       "vision_msgs/Classification")
    dense_topic: str = Field(default="~/{model}/dense", description="dense-map models: sensor_msgs/Image")
    label_info_topic: str = "~/{model}/label_info"
    heartbeat_topic: str = "~/heartbeat"
    label_in_class_id: bool = Field(default=False, description="hypothesis.class_id holds the label, not the "
                                    "class number")
    image: Ros2ImageConfig = Ros2ImageConfig()
    reset_service: str | None = Field(default="~/reset", description="std_srvs/Trigger; null: no service")
    diagnostics: bool = Field(default=True, description="publish diagnostic_msgs/DiagnosticArray")
    diagnostics_topic: str = "/diagnostics"
    diagnostics_period_s: float = Field(default=1.0, ge=0.1, le=60)
    qos: Ros2QosTopics = Ros2QosTopics()
    wait_for_subscribers: int = Field(default=0, ge=0, le=1000, description="open() waits until this many "
                                      "subscribers match each model's result topic (replaying files)")
    wait_timeout_s: float = Field(default=10.0, gt=0, le=3600)

    @field_validator("detections_topic", "classifications_topic", "dense_topic", "label_info_topic")
    @classmethod
    def _per_model(cls, value: str, info: Any) -> str:
        check_topic(value, info.field_name)
        if "{model}" not in value:
            raise ValueError(f"{info.field_name} {value!r} must contain {{model}} (one topic per model)")
        return value

    @field_validator("heartbeat_topic", "diagnostics_topic", "reset_service")
    @classmethod
    def _name(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else check_topic(value, info.field_name)


# the config key of the topic each result kind is published on
RESULT_TOPICS = {"detections": "detections_topic", "classifications": "classifications_topic",
                 "dense": "dense_topic"}


class _ModelTopics:
    def __init__(self, kind: str, results: Any, label_info: Any, image: Any | None, array: Any):
        self.kind = kind
        self.known = True  # False: the decoder comes from the model's metadata; its first result tells the kind
        self.results = results  # the publisher of this model's kind
        self.detections = results if kind == "detections" else None
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
    uses_ros = True  # the pipeline hands it the shared RosRuntime before open()

    def __init__(self, config: Ros2OutputConfig, output_id: str):
        super().__init__(config, output_id)
        self.runtime: RosRuntime | None = None
        self.models: list[tuple[str, list[str]]] = []  # (model id, labels) set by the pipeline
        self.kinds: dict[str, str | None] = {}  # model id -> result kind its config declares
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
        self._handler: Callable[[str, dict], dict | None] | None = None
        self._last_heartbeat: dict[str, Any] | None = None
        self._msgs: Any = None
        self._events: Callable[[str], Any] = lambda topic: None
        self._lock = threading.Lock()
        self._rlog = RateLimitedLog(log)

    def attach_ros(self, runtime: RosRuntime, models: Iterable[tuple[str, list[str]]],
                   kinds: dict[str, str | None] | None = None) -> None:
        """`kinds`: model id -> the result kind its config declares, None where the model's metadata picks the
        decoder (its first result tells the kind); without `kinds` every model is a detector."""
        self.runtime = runtime
        self.models = list(models)
        self.kinds = dict(kinds) if kinds is not None else {model_id: "detections" for model_id, _ in self.models}

    # -- lifecycle ---------------------------------------------------------------------------------------
    def open(self) -> None:
        if self.runtime is None or self.runtime.node is None:
            raise OutputError(f"output '{self.id}': no ROS node (the pipeline hands one to ros2 outputs)")
        m = self._msgs = _import_messages(self.config.heartbeat)
        node = self.runtime.node
        from rclpy.event_handler import PublisherEventCallbacks

        from ..ros.runtime import qos_profile

        def events(topic: str) -> Any:
            return PublisherEventCallbacks(incompatible_qos=lambda info: self._incompatible(topic, info))

        self._events = events
        q = self.config.qos
        for model_id, labels in self.models:
            name = cv.ros_name(model_id)
            result_kind = self.kinds.get(model_id) or "detections"
            results = self._result_publisher(model_id, result_kind)
            info_topic = self.config.label_info_topic.replace("{model}", name)
            info = node.create_publisher(m.LabelInfo, info_topic, qos_profile(q.label_info),
                                         event_callbacks=events(info_topic))
            image = None
            if self.config.image.enabled:
                topic = self.config.image.topic.replace("{model}", name)
                kind = m.Image
                if self.config.image.format == "jpeg":
                    topic, kind = topic + "/compressed", m.CompressedImage
                image = node.create_publisher(kind, topic, qos_profile(q.image), event_callbacks=events(topic))
            self._topics[model_id] = _ModelTopics(result_kind, results, info, image,
                                                  self._reused_message(result_kind))
            self._topics[model_id].known = self.kinds.get(model_id) is not None
            self._topics[model_id].labels = list(labels)
            info.publish(self._label_info(labels))
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

    def _result_publisher(self, model_id: str, kind: str) -> Any:
        """The publisher of one model's results: the message type and topic of its kind."""
        from ..ros.runtime import qos_profile

        m = self._msgs
        message = {"detections": m.Detection2DArray, "classifications": m.Classification, "dense": m.Image}[kind]
        if message is None:  # an older vision_msgs (before Humble) has Classification2D, not Classification
            raise OutputError(f"output '{self.id}': model '{model_id}' is a classifier but this vision_msgs has no "
                              "Classification message (Humble or later is needed)")
        topic = getattr(self.config, RESULT_TOPICS[kind]).replace("{model}", cv.ros_name(model_id))
        qos = getattr(self.config.qos, kind)
        return self.runtime.node.create_publisher(message, topic, qos_profile(qos), event_callbacks=self._events(topic))

    def _reused_message(self, kind: str) -> Any:
        m = self._msgs
        return {"detections": m.Detection2DArray, "classifications": m.Classification, "dense": m.Image}[kind]()

    def model_loaded(self, model_id: str, labels: list[str], kind: str) -> None:
        """Called by the pipeline once a model is loaded, before any frame: names read from the model file
        (Ultralytics `names`, Paddle `character`) replace the configured ones in LabelInfo (transient local:
        late subscribers get the new one), and a model whose decoder came from its metadata gets the topic
        of its kind now."""
        topics = self._topics.get(model_id)
        if topics is None:
            return
        if labels and labels != topics.labels:
            topics.labels = list(labels)
            topics.label_info.publish(self._label_info(topics.labels))
        if not topics.known or kind != topics.kind:
            self._learn_kind(topics, model_id, kind)

    def _learn_kind(self, topics: _ModelTopics, model_id: str, kind: str) -> None:
        """A model whose decoder comes from its metadata (no `decoder` in the config) says its kind once
        loaded (else at its first result): a classifier's publisher replaces the detections one assumed at
        open(); with wait_for_subscribers it waits for its subscribers here, as open() does for the others."""
        topics.known = True
        if kind != topics.kind:
            old = topics.results
            topics.kind, topics.results = kind, self._result_publisher(model_id, kind)
            topics.detections = topics.results if kind == "detections" else None
            topics.array, topics.pool = self._reused_message(kind), []
            self.runtime.node.destroy_publisher(old)
        log.info("output '%s': model '%s' publishes %s (decoder from its metadata) on %s", self.id, model_id,
                 kind, topics.results.topic_name)
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
                       *[p for t in self._topics.values() for p in (t.results, t.label_info, t.image)]]:
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
            for pub in (topics.results, topics.image):
                wait = getattr(pub, "wait_for_all_acked", None)
                left = deadline - time.monotonic()
                if wait is None or left <= 0:
                    continue
                try:
                    wait(Duration(nanoseconds=int(left * 1e9)))
                except Exception as exc:  # best effort at shutdown
                    log.debug("output '%s': waiting for acknowledgements: %s", self.id, exc)

    # -- detections --------------------------------------------------------------------------------------
    def publish_result(self, result: Result) -> None:
        topics = self._topics.get(result.model)
        if topics is None:
            return
        if result.status != "ok" or not self.runtime.active.is_set():
            # An empty Detection2DArray would claim "nothing there": a frame whose detections are invalid
            # (safe stop) or failed is not published; the heartbeat and /diagnostics say why.
            self.skipped += 1
            return
        if not topics.known or result.kind != topics.kind:
            self._learn_kind(topics, result.model, result.kind)
        if result.kind == "classifications":
            topics.results.publish(self.classification(result, topics))
        elif result.kind == "dense":
            if result.dense is None:  # an ok dense result always carries its map; say so if one does not
                self.skipped += 1
                self._rlog.error(f"dense:{result.model}", "output '%s': model '%s': a dense result without a map",
                                 self.id, result.model)
                return
            topics.results.publish(self.dense_image(result, topics))
        else:
            topics.results.publish(self.detection_array(result, topics))
        self.published += 1
        if topics.image is not None and result.frame is not None:
            now = time.monotonic()
            if now >= topics.next_image and topics.image.get_subscription_count() > 0:
                topics.next_image = now + 1.0 / self.config.image.rate_hz
                topics.image.publish(self.annotated(result))
                self.images += 1

    def publish(self, record: dict[str, Any]) -> None:
        pass  # every record reaches this output as a typed Result or a heartbeat

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
        while len(pool) < len(result.detections):
            det = m.Detection2D()
            det.results = [m.ObjectHypothesisWithPose()]
            pool.append(det)
        for det, d in zip(pool, result.detections):
            det.header = header
            cx, cy, sx, sy = cv.detection_values(d.bbox)
            box = det.bbox
            box.center.position.x, box.center.position.y = cx, cy
            box.size_x, box.size_y = sx, sy
            hyp = det.results[0].hypothesis
            hyp.class_id = cv.class_id_text(d.class_id, d.label, label_in_id)
            hyp.score = float(d.score)
        msg.detections = pool[:len(result.detections)]
        return msg

    def classification(self, result: Result, topics: _ModelTopics | None = None) -> Any:
        """vision_msgs/Classification of one result: header = capture stamp and frame_id, results[] = the
        decoder's top-k as ObjectHypothesis (class_id as text, score), best first."""
        m = self._msgs
        msg = topics.array if topics is not None else m.Classification()
        pool = topics.pool if topics is not None else []
        msg.header.stamp.sec, msg.header.stamp.nanosec = cv.seconds_to_stamp(result.stamp)
        msg.header.frame_id = result.frame_id
        values = cv.classification_values(result.classifications, self.config.label_in_class_id)
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
        height, width, encoding, big_endian, step, data = cv.dense_image_fields(result.dense.task, result.dense.map)
        msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = height, width, encoding, big_endian, step
        # bytes: one copy of the map, and rclpy serialises a bytes payload faster than an array('B')
        # (1.5-3.3 ms against 2.0-4.7 ms for a 640x480 32FC1 map: benchmarks/bench_ros2_results.py)
        msg.data = bytes(data)
        return msg

    def annotated(self, result: Result) -> Any:
        m = self._msgs
        image = cv.draw_detections(result.frame.image, result.detections)
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

    def set_control_handler(self, handler: Callable[[str, dict], dict | None] | None,
                            commands: Iterable[str] | None = None) -> None:
        """The daemon's command handler (the same one the ZeroMQ control socket uses); `reset` is served."""
        self._handler = handler

    def _on_reset(self, request: Any, response: Any) -> Any:
        handler = self._handler
        if handler is None:
            response.success, response.message = False, "edgeinfer is still starting"
            return response
        try:
            reply = handler("reset", {}) or {}
            response.success = bool(reply.get("ok", False))
            response.message = str(reply.get("state") or reply.get("error") or reply.get("reply") or "")
        except Exception as exc:  # the caller must get an answer, whatever failed
            response.success, response.message = False, f"reset failed: {type(exc).__name__}: {exc}"
        log.warning("output '%s': reset service called: %s (%s)", self.id, response.success, response.message)
        return response

    def _incompatible(self, topic: str, info: Any) -> None:
        from ..ros.runtime import policy_name

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
