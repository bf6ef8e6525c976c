"""Config models shared by the ROS plugins: QoS per topic and the node settings (pure pydantic, no rclpy)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from ..schema import StrictModel

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
