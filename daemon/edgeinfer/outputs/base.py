"""The output interface: every channel gets the same records (detections and heartbeats)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ..schema import StrictModel

if TYPE_CHECKING:
    from ..results import Result


class OutputConfigBase(StrictModel):
    id: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$", description="default: the type")
    heartbeat: bool = Field(default=True, description="also publish the supervisor's heartbeat here")


class OutputError(RuntimeError):
    pass


class Output(ABC):
    def __init__(self, config: OutputConfigBase, output_id: str):
        self.config = config
        self.id = output_id
        self.published = 0
        self.errors = 0
        self.closed_by_peer = False  # the reader went away for good (e.g. stdout piped into `head`)
        self.last_error: str | None = None  # why the last write failed (None after a good one)

    @classmethod
    def preflight_config(cls, config: OutputConfigBase) -> list[str]:
        """File checks for `edgeinfer check` and start-up, each "<field>: <problem>"; [] when none."""
        return []

    def open(self) -> None:
        """Acquire sockets/files. Called before any source starts."""

    def publish_result(self, result: Result) -> None:
        """One result per processed frame (also with no detections). JSON outputs render `to_record()`;
        an output that needs the float values or the image (ROS) overrides this."""
        self.publish(result.to_record())

    @abstractmethod
    def publish(self, record: dict[str, Any]) -> None:
        """A JSON-ready record (detections rendered by `publish_result`, or a heartbeat)."""

    def heartbeat(self, record: dict[str, Any]) -> None:
        if self.config.heartbeat:
            self.publish(record)

    def counters(self) -> dict[str, Any]:
        """Plugin counters for the heartbeat (e.g. refused peers); {} when it has none."""
        return {}

    def close(self) -> None:
        pass
