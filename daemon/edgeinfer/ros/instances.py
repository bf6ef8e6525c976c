"""What a ROS 2 output publishes beside the Detection2DArray of segment and pose models, stamped like it:
  ~/{model}/instances  sensor_msgs/Image mono8 (mono16 above 255 instances): pixel = 1-based position of the
                       detection in the Detection2DArray, 0 = no instance; source-image size
  ~/{model}/keypoints  edgeinfer_msgs/KeypointsArray: per detection, its keypoints in source pixels
A model's publishers are made when its first result carries masks or keypoints (with wait_for_subscribers, it
waits for them there); from then on every result of it is published (also with no instance), so a subscriber
can pair the topics by stamp."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..instances import detection_id, instance_image
from ..lazy import lazy_import
from ..outputs.base import OutputError
from . import INTERFACES_HINT
from . import convert as cv


class InstanceTopics:
    def __init__(self, node: Any, config: Any, events: Any):
        self.node = node
        self.config = config  # Ros2OutputConfig
        self.events = events
        self.images: dict[str, Any] = {}  # model id -> publisher
        self.keypoints: dict[str, Any] = {}
        self._msgs: Any = None

    def publish(self, result: Any, header: Any) -> int:
        """Publish what `result` (ok, detections) holds beyond boxes; returns the number of messages."""
        model = result.model
        detections = result.detections
        if model not in self.images and any(getattr(d, "mask", None) is not None for d in detections):
            self.images[model] = self._publisher(model, "instances")
        if model not in self.keypoints and any(getattr(d, "keypoints", None) is not None for d in detections):
            self.keypoints[model] = self._publisher(model, "keypoints")
        sent = 0
        if model in self.images:
            self.images[model].publish(self.instance_image(result, header))
            sent += 1
        if model in self.keypoints:
            self.keypoints[model].publish(self.keypoints_array(result, header))
            sent += 1
        return sent

    def _messages(self) -> Any:
        if self._msgs is None:
            own = lazy_import("edgeinfer_msgs.msg", INTERFACES_HINT)
            sensor = lazy_import("sensor_msgs.msg", INTERFACES_HINT)
            self._msgs = (sensor.Image, own.KeypointsArray, own.Keypoints)
        return self._msgs

    def _publisher(self, model: str, what: str) -> Any:
        from .runtime import qos_profile

        image, keypoints_array, _ = self._messages()
        topic = getattr(self.config, f"{what}_topic").replace("{model}", cv.ros_name(model))
        message = image if what == "instances" else keypoints_array
        qos = getattr(self.config.qos, what)
        publisher = self.node.create_publisher(message, topic, qos_profile(qos), event_callbacks=self.events(topic))
        if self.config.wait_for_subscribers:  # as for the result topics: replaying files must lose no message
            deadline = time.monotonic() + self.config.wait_timeout_s
            while publisher.get_subscription_count() < self.config.wait_for_subscribers:
                if time.monotonic() > deadline:
                    raise OutputError(f"wait_for_subscribers={self.config.wait_for_subscribers} not reached on "
                                      f"{topic} within {self.config.wait_timeout_s:g} s")
                time.sleep(0.02)
        return publisher

    def instance_image(self, result: Any, header: Any) -> Any:
        image_type, _, _ = self._messages()
        height, width = _source_size(result)
        ids = instance_image(result.detections, height, width)
        msg = image_type()
        msg.header = header
        msg.height, msg.width = height, width
        msg.encoding = "mono8" if ids.dtype == np.uint8 else "mono16"
        msg.is_bigendian = 0
        msg.step = width * ids.itemsize
        msg.data = ids.astype(ids.dtype.newbyteorder("<"), copy=False).tobytes()
        return msg

    def keypoints_array(self, result: Any, header: Any) -> Any:
        _, array_type, keypoints_type = self._messages()
        msg = array_type()
        msg.header = header
        instances = []
        for index, detection in enumerate(result.detections):
            entry = keypoints_type()
            entry.id, entry.index = detection_id(detection, index), index
            points = getattr(detection, "keypoints", None)
            if points is not None:
                entry.x = points[:, 0].astype(np.float32).tolist()
                entry.y = points[:, 1].astype(np.float32).tolist()
                entry.confidence = points[:, 2].astype(np.float32).tolist()
            instances.append(entry)
        msg.instances = instances
        return msg

    def destroy(self) -> None:
        for publisher in [*self.images.values(), *self.keypoints.values()]:
            try:
                self.node.destroy_publisher(publisher)
            except Exception:  # the node may already be gone at shutdown
                pass
        self.images.clear()
        self.keypoints.clear()


def _source_size(result: Any) -> tuple[int, int]:
    """(height, width) of the source image: from a mask when there is one, else from the frame."""
    for detection in result.detections:
        mask = getattr(detection, "mask", None)
        if mask is not None:
            return mask.height, mask.width
    if result.frame is not None:
        return int(result.frame.image.shape[0]), int(result.frame.image.shape[1])
    return 0, 0
