"""Config models shared by the ROS plugins: QoS per topic and the node settings (pure pydantic, no rclpy)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from ...outputs.schema import OutputConfigBase
from ...schema import StrictModel
from ...sources.schema import SourceConfigBase

# reliability, durability, depth of the two presets (rclpy's qos_profile_sensor_data and the default profile)
QOS_PRESETS = {
    "default": ("reliable", "volatile", 10),
    "sensor_data": ("best_effort", "volatile", 5),
}

_NAME = re.compile(r"^(~/|/)?[A-Za-z_{][A-Za-z0-9_{}]*(/[A-Za-z_{][A-Za-z0-9_{}]*)*$")


def check_topic(value: str, key: str = "topic") -> str:
    """ROS names: letters, digits, `_`, separated by `/`; absolute (`/x`), private (`~/x`) or relative."""
    if not _NAME.match(value) or "//" in value or value.endswith("/"):
        raise ValueError(f"{key} {value!r} is not a valid ROS 2 topic name (letters, digits and _ separated by "
                         f"/, not starting with a digit; e.g. /camera/image_raw or ~/heartbeat)")
    return value


class QosConfig(StrictModel):
    """A preset, optionally with single policies overridden."""

    preset: Literal["default", "sensor_data"] = "default"
    reliability: Literal["reliable", "best_effort"] | None = None
    durability: Literal["volatile", "transient_local"] | None = None
    depth: int | None = Field(default=None, ge=1, le=10_000, description="history depth (keep last)")

    def resolved(self) -> tuple[str, str, int]:
        reliability, durability, depth = QOS_PRESETS[self.preset]
        return (self.reliability or reliability, self.durability or durability, self.depth or depth)


class RosConfig(StrictModel):
    """The one node every ROS source and output shares (top-level `ros:` key)."""

    node_name: str = Field(default="edgeinfer", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    namespace: str = Field(default="", description="e.g. /robot1; empty: the root (or the launch file's)")
    lifecycle: Literal["auto", "on", "off"] = Field(
        default="auto", description="a managed (lifecycle) node where rclpy has one; off: a plain node")
    autostart: bool = Field(default=True, description="lifecycle: configure and activate once models are warm")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if value and (not value.startswith("/") or not _NAME.match(value)):
            raise ValueError(f"namespace {value!r} must be empty or an absolute ROS name like /robot1")
        return value


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
    instances: QosConfig = QosConfig()  # reliable, like dense: an image in fragments
    keypoints: QosConfig = QosConfig()
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
    instances_topic: str = Field(default="~/{model}/instances", description="segment models: sensor_msgs/Image "
                                 "mono8/mono16, pixel = 1-based index into the Detection2DArray")
    keypoints_topic: str = Field(default="~/{model}/keypoints", description="pose models: "
                                 "edgeinfer_msgs/KeypointsArray")
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

    @field_validator("detections_topic", "classifications_topic", "dense_topic", "label_info_topic",
                     "instances_topic", "keypoints_topic")
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


class Ros2SourceConfig(SourceConfigBase):
    type: Literal["ros2"] = "ros2"
    topic: str = Field(description="sensor_msgs/Image topic, or CompressedImage with transport: compressed")
    transport: Literal["raw", "compressed"] = "raw"
    # Reliable, because Fast DDS over UDP lost most large best-effort images here (docs/benchmarks.md, bench_ros2.py); a
    # best-effort camera does not match and is reported naming RELIABILITY: set preset sensor_data for it.
    # Depth 1: only the newest image is used, a deeper queue only hands over images that are already old.
    qos: QosConfig = Field(default=QosConfig(preset="default", depth=1),
                           description="QoS of the image subscription")
    use_message_frame_id: bool = Field(default=True, description="the message's header.frame_id wins over "
                                       "frame_id (which then only fills in an empty one)")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic(value, "topic")
