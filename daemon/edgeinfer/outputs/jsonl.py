"""JSON Lines: one record per line to stdout or a file (append), flushed per line so a pipe sees it at once."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from .base import Output, OutputConfigBase, OutputError


class JsonlOutputConfig(OutputConfigBase):
    type: Literal["jsonl"] = "jsonl"
    path: str = Field(default="-", description="'-' for stdout, else a file appended to")


class JsonlOutput(Output):
    config: JsonlOutputConfig

    def __init__(self, config: JsonlOutputConfig, output_id: str):
        super().__init__(config, output_id)
        self._lock = threading.Lock()  # records and heartbeats come from different threads
        self._stream = None

    def open(self) -> None:
        if self.config.path == "-":
            self._stream = sys.stdout
        else:
            path = Path(self.config.path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._stream = path.open("a", encoding="utf-8")
            except OSError as exc:
                raise OutputError(f"output '{self.id}': cannot open {path}: {exc}") from exc

    def publish(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if self._stream is None:
                if self.closed_by_peer:
                    raise OutputError(f"output '{self.id}': stdout was closed by its reader")
                return
            try:
                self._stream.write(line)
                self._stream.flush()
            except BrokenPipeError as exc:
                self._stdout_closed()
                raise OutputError(f"output '{self.id}': stdout was closed by its reader") from exc
            self.published += 1

    def _stdout_closed(self) -> None:
        # Point fd 1 at /dev/null so that Python's own flush at exit does not fail a second time.
        self.closed_by_peer = True
        self._stream = None
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)

    def close(self) -> None:
        with self._lock:
            if self._stream is not None and self._stream is not sys.stdout:
                self._stream.close()
            self._stream = None
