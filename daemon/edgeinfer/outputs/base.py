"""The output interface: every channel gets one result per processed frame and the supervisor's heartbeats.

Lifecycle, called by the pipeline (and the daemon for heartbeats), in this order:

    open(ctx)                 acquire sockets/files; take what the plugin shares from the RuntimeContext
    on_model_loaded(info)     once per model, when the loaded model tells its names and payload type
    publish(result)           one `Result` per processed frame (also with nothing found), from model workers
    heartbeat(record)         every supervision cycle, from the supervisor thread
    event(record)             a daemon event (a refused reload), from the reload thread
    close()                   release everything; called once, also after a failed open

`publish` and `heartbeat` may be called from different threads. A failure raises; the pipeline counts it in
`errors`, keeps the text in `last_error` and reports it to the watchdog. JSON outputs subclass `RecordOutput`
and write rendered records; others (ROS) dispatch on the payload type in one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from .schema import OutputConfigBase

if TYPE_CHECKING:
    from ..results import Result
    from ..runtime import ModelInfo, RuntimeContext


class OutputError(RuntimeError):
    pass


class Output(ABC):
    def __init__(self, config: OutputConfigBase, output_id: str):
        self.config = config
        self.id = output_id
        self.published = 0
        self.errors = 0
        self.last_error: str | None = None  # the text of the latest failed write, for the daemon's failure line
        self.closed_by_peer = False  # the reader went away for good (e.g. stdout piped into `head`)
        self.last_error: str | None = None  # why the last write failed (None after a good one)

    @classmethod
    def preflight_config(cls, config: OutputConfigBase) -> list[str]:
        """File checks for `edgeinfer check` and start-up, each "<field>: <problem>"; [] when none."""
        return []

    def open(self, ctx: RuntimeContext) -> None:
        """Acquire sockets/files. Called before any model loads and any source starts."""

    def on_model_loaded(self, info: ModelInfo) -> None:
        """A model finished loading: its names and payload type as the model file tells them."""

    @abstractmethod
    def publish(self, result: Result) -> None:
        """One result per processed frame (also with nothing found)."""

    def heartbeat(self, record: dict[str, Any]) -> None:
        """The supervisor's heartbeat record, every cycle; outputs that carry heartbeats override this."""

    def event(self, record: dict[str, Any]) -> None:
        """A daemon event record, e.g. `{"type": "reload_failed", "stamp", "config", "reason"}` (reload.py);
        outputs that carry JSON records override this."""

    def counters(self) -> dict[str, Any]:
        """Plugin counters for the heartbeat (e.g. refused peers); {} when it has none."""
        return {}

    def close(self) -> None:
        pass


class RecordOutput(Output):
    """An output of JSON records: results rendered by `Result.to_record()` (numbers rounded) and heartbeats
    (when the config's `heartbeat` asks for them) go through one `write_record`."""

    def publish(self, result: Result) -> None:
        self.write_record(result.to_record())

    def heartbeat(self, record: dict[str, Any]) -> None:
        if self.config.heartbeat:
            self.write_record(record)

    def event(self, record: dict[str, Any]) -> None:
        self.write_record(record)

    @abstractmethod
    def write_record(self, record: dict[str, Any]) -> None:
        """Write one JSON-ready record (a result or a heartbeat)."""
