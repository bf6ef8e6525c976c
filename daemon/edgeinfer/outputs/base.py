"""The output interface: every channel gets the same records (detections and heartbeats)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pydantic import Field

from ..schema import StrictModel


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

    def open(self) -> None:
        """Acquire sockets/files. Called before any source starts."""

    @abstractmethod
    def publish(self, record: dict[str, Any]) -> None:
        """One record per processed frame (also with no detections)."""

    def heartbeat(self, record: dict[str, Any]) -> None:
        if self.config.heartbeat:
            self.publish(record)

    def close(self) -> None:
        pass
