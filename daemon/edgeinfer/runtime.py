"""What the pipeline shares with its plugins while it runs: the `RuntimeContext`.

A plugin receives the context in its lifecycle call (`Output.open(ctx)`, `Source.start(ctx)`) and takes from it
only what it needs: the one ROS node of the process (created on first use, so rclpy is imported only when a
ROS plugin asks), the control commands the daemon answers (reset, status), the health reporter, and the model
catalogue (ids, labels and payload types, as declared by the config and then as read from the loaded models).
The core never probes a plugin for optional methods: what a plugin may do is declared by its base class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .health import HealthReporter, NullReporter
from .results import Detections, Payload

CommandHandler = Callable[[dict[str, Any]], dict[str, Any]]


class CommandRegistry:
    """Commands the daemon answers on any control channel (ZeroMQ's control socket, a ROS service, HTTP).
    The daemon registers them; a channel calls `handle`."""

    def __init__(self) -> None:
        self._handlers: dict[str, CommandHandler] = {}
        self._lock = threading.Lock()

    def register(self, name: str, handler: CommandHandler) -> None:
        with self._lock:
            self._handlers[name] = handler

    @property
    def names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._handlers)

    def handle(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            handler = self._handlers.get(name)
        if handler is None:
            known = ", ".join(("ping", *self.names))
            return {"ok": False, "error": f"unknown command '{name}'; known: {known}"}
        return handler(request)


@dataclass
class ModelInfo:
    """What an output may know of a model: as declared by the config first (`labels` from a labels file,
    `payload_type` from a configured decoder, None when the model's metadata picks it), then as loaded."""

    id: str
    labels: list[str] = field(default_factory=list)
    payload_type: type[Payload] | None = Detections
    sources: tuple[str, ...] = ()
    backend: str = ""  # description of the backend serving it, once loaded
    device: str = ""

    @property
    def kind(self) -> str | None:
        return None if self.payload_type is None else self.payload_type.kind


class RuntimeContext:
    """Handed to every plugin's lifecycle call; owned by the pipeline (one per pipeline)."""

    def __init__(self, catalogue: dict[str, ModelInfo] | None = None, reporter: HealthReporter | None = None,
                 commands: CommandRegistry | None = None, ros_factory: Callable[[], Any] | None = None,
                 status: Callable[[], dict[str, Any] | None] = lambda: None,
                 stats: Callable[[], dict[str, Any]] = dict):
        self.catalogue: dict[str, ModelInfo] = dict(catalogue or {})
        self.reporter: HealthReporter = reporter or NullReporter()
        self.commands = commands or CommandRegistry()
        self._ros_factory = ros_factory
        self._ros: Any = None
        self._ros_lock = threading.Lock()
        self.status = status  # the latest heartbeat (None before the first)
        self.stats = stats  # the pipeline's counters

    def ros(self) -> Any:
        """The process's one ROS runtime (node + executor), started on the first call."""
        with self._ros_lock:
            if self._ros is None:
                if self._ros_factory is None:
                    raise RuntimeError("this pipeline has no ROS runtime (no ros settings were given)")
                self._ros = self._ros_factory()
            return self._ros

    @property
    def ros_started(self) -> Any:
        """The ROS runtime if a plugin started it, else None (for the pipeline's ready and close steps)."""
        return self._ros
