"""ROS 2 image topic as a source: sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) or CompressedImage
(jpeg, png). Latest-frame semantics: the subscription callback keeps only the newest message (an unread one
that is replaced counts as a drop) and the capture thread converts it, so the executor never waits on image
work. The message's header stamp and frame_id travel with the frame (`Captured`) to the detections.

The subscription lives on the pipeline's shared node (edgeinfer.ros.runtime); rclpy is imported in `_open`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ...frame import Captured
from ...health import HealthReporter
from ...lazy import lazy_import
from ...mailbox import FrameSink
from ...sources.base import BadFrame, Source, SourceError
from . import INTERFACES_HINT
from . import convert as cv
from .runtime import policy_name, qos_profile
from .schema import Ros2SourceConfig

if TYPE_CHECKING:
    from ...runtime import RuntimeContext
    from .runtime import RosRuntime

WAIT_SLICE_S = 0.1  # how often a read waiting for a message looks at the stop flag




class Ros2Source(Source):
    config: Ros2SourceConfig

    def __init__(self, config: Ros2SourceConfig, sink: FrameSink, reporter: HealthReporter | None = None):
        super().__init__(config, sink, reporter)
        self.runtime: RosRuntime | None = None
        self._subscription: Any = None
        self._latest: Any = None
        self._cond = threading.Condition()
        self.received = 0
        self.overwritten = 0  # messages replaced before the capture thread took them
        self.lost = 0  # messages the middleware reports lost on the way (best effort: fragments dropped)
        self.qos_events: list[str] = []

    def attach(self, ctx: RuntimeContext) -> None:
        self.runtime = ctx.ros()  # the process's one node; subscriptions are made on it at _open()


    def describe(self) -> str:
        return f"ros2 {self.config.topic} ({self.config.transport})"

    def preflight(self) -> list[str]:
        return []

    def _open(self) -> None:
        if self.runtime is None or self.runtime.node is None:
            raise SourceError("no ROS node (the pipeline hands one to ros2 sources)")
        if self._subscription is not None:
            return  # a live source is reopened after a failed read; the subscription stays valid
        msgs = lazy_import("sensor_msgs.msg", INTERFACES_HINT)
        from rclpy.event_handler import SubscriptionEventCallbacks

        kind = msgs.CompressedImage if self.config.transport == "compressed" else msgs.Image

        def incompatible(info: Any) -> None:
            text = (f"incompatible QoS on {self.config.topic}: the publisher does not offer the {policy_name(info)} "
                    f"policy this subscription requests")
            self.qos_events.append(text)
            self._reporter.fault(self.id, text)
            self._log.log(30, f"qos:{self.id}", f"source '{self.id}': {text}")

        def lost(info: Any) -> None:
            self.lost += int(info.total_count_change)
            self._log.log(30, f"lost:{self.id}", f"source '{self.id}': {self.lost} image message(s) on "
                          f"{self.config.topic} lost in transport so far (large best-effort images lose "
                          f"fragments; a reliable camera topic with qos: {{preset: default}} avoids it)")

        self._subscription = self.runtime.node.create_subscription(
            kind, self.config.topic, self._on_message, qos_profile(self.config.qos),
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=incompatible, message_lost=lost))

    def _on_message(self, msg: Any) -> None:
        # on the executor thread: keep the newest, nothing more
        with self._cond:
            if self._latest is not None:
                self.overwritten += 1
            self._latest = msg
            self.received += 1
            self._cond.notify()

    def _read(self) -> Captured | None:
        with self._cond:
            while self._latest is None:
                if self._stop.is_set():
                    return None
                self._cond.wait(WAIT_SLICE_S)
            msg, self._latest = self._latest, None
        try:
            if self.config.transport == "compressed":
                image = cv.compressed_to_bgr(msg.format, msg.data)
            else:
                image = cv.image_to_bgr(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        except ValueError as exc:
            raise BadFrame(str(exc)) from exc
        stamp = cv.stamp_to_seconds(msg.header.stamp.sec, msg.header.stamp.nanosec)
        frame_id = msg.header.frame_id if self.config.use_message_frame_id and msg.header.frame_id else None
        return Captured(image, wall=stamp, frame_id=frame_id)

    def _close(self) -> None:
        # the subscription is kept across reopen; it goes with the node when the runtime closes
        pass

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats["received"] = self.received
        stats["overwritten"] = self.overwritten
        stats["lost"] = self.lost
        if self.qos_events:
            stats["qos_events"] = self.qos_events[-3:]
        return stats
