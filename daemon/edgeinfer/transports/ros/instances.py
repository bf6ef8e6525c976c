"""What a ROS 2 output publishes beside the Detection2DArray of segment and pose models, stamped like it:
  ~/{model}/instances  sensor_msgs/Image mono8 (mono16 above 255 instances): pixel = 1-based position of the
                       detection in the Detection2DArray, 0 = no instance; source-image size
  ~/{model}/keypoints  edgeinfer_msgs/KeypointsArray: per detection, its keypoints in source pixels
A model gets these publishers once its payload type is known to be `Masks` / `Keypoints` (from the config's
decoder at open, else when the model is loaded); every result of it is then published on them, also one with
no instance, so a subscriber can pair the topics by stamp."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...instances import Keypoints, Masks, detection_id, instance_image
from ...lazy import lazy_import
from ...outputs.base import OutputError
from ...results import Payload, Result
from . import INTERFACES_HINT
from . import convert as cv
from .runtime import qos_profile


class InstanceTopics:
    def __init__(self, node: Any, config: Any, events: Any):
        self.node = node
        self.config = config  # Ros2OutputConfig
        self.events = events
        self.images: dict[str, Any] = {}  # model id -> publisher
        self.keypoints: dict[str, Any] = {}
        self._msgs: Any = None

    def ensure(self, model: str, payload_type: type[Payload] | None) -> None:
        """The publishers `payload_type` needs for `model` (none for plain boxes and other kinds)."""
        if payload_type is not None and issubclass(payload_type, Masks) and model not in self.images:
            self.images[model] = self._publisher(model, "instances")
        if payload_type is not None and issubclass(payload_type, Keypoints) and model not in self.keypoints:
            self.keypoints[model] = self._publisher(model, "keypoints")

    def publish(self, result: Result, header: Any) -> int:
        """Publish what `result` (ok) holds beyond boxes with the Detection2DArray's `header`; returns the
        number of messages sent."""
        sent = 0
        if result.model in self.images:
            self.images[result.model].publish(self.instance_image(result, header))
            sent += 1
        if result.model in self.keypoints:
            self.keypoints[result.model].publish(self.keypoints_array(result, header))
            sent += 1
        return sent

    def _messages(self) -> Any:
        if self._msgs is None:
            own = lazy_import("edgeinfer_msgs.msg", INTERFACES_HINT)
            sensor = lazy_import("sensor_msgs.msg", INTERFACES_HINT)
            self._msgs = (sensor.Image, own.KeypointsArray, own.Keypoints)
        return self._msgs

    def _publisher(self, model: str, what: str) -> Any:
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

    def instance_image(self, result: Result, header: Any) -> Any:
        image_type, _, _ = self._messages()
        height, width = _source_size(result)
        ids = instance_image(result.payload.detections, height, width)
        msg = image_type()
        msg.header = header
        msg.height, msg.width = height, width
        msg.encoding = "mono8" if ids.dtype == np.uint8 else "mono16"
        msg.is_bigendian = 0
        msg.step = width * ids.itemsize
        msg.data = ids.astype(ids.dtype.newbyteorder("<"), copy=False).tobytes()
        return msg

    def keypoints_array(self, result: Result, header: Any) -> Any:
        _, array_type, keypoints_type = self._messages()
        msg = array_type()
        msg.header = header
        instances = []
        for index, detection in enumerate(result.payload.detections):
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

    def publishers(self) -> list[Any]:
        return [*self.images.values(), *self.keypoints.values()]

    def forget(self) -> None:
        self.images.clear()
        self.keypoints.clear()


def _source_size(result: Result) -> tuple[int, int]:
    """(height, width) of the source image: from a mask when there is one, else from the frame."""
    for detection in result.payload.detections:
        mask = getattr(detection, "mask", None)
        if mask is not None:
            return mask.height, mask.width
    if result.frame is not None:
        width, height = result.frame.size  # also for a frame that lives on the GPU (no download)
        return int(height), int(width)
    return 0, 0
