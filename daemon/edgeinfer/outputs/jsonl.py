"""JSON Lines: one record per line to stdout or a file (append).

Each record goes out in one `os.write` of the whole line, unbuffered, so a pipe sees it at once and a failed
write leaves nothing half-written behind: a short write to a file (disk full) is cut back off the file. A
file that ends in a partial line (a crash or a full disk in an earlier run) is continued on a fresh line.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import OutputError, RecordOutput
from .schema import JsonlOutputConfig

if TYPE_CHECKING:
    from ..runtime import RuntimeContext

log = logging.getLogger(__name__)




class JsonlOutput(RecordOutput):
    config: JsonlOutputConfig

    def __init__(self, config: JsonlOutputConfig, output_id: str):
        super().__init__(config, output_id)
        self._lock = threading.Lock()  # records and heartbeats come from different threads
        self._fd: int | None = None
        self._own_fd = False
        self._size = 0  # bytes in the file after the last whole record (files only)
        self._text: Any = None  # a stdout without a file descriptor

    @property
    def is_stdout(self) -> bool:
        return self.config.path == "-"

    def open(self, ctx: RuntimeContext) -> None:
        if self.is_stdout:
            # Python sets sys.stdout to None when started with fd 1 closed (`>&-`); fd 1 may since have been
            # reused by a file we opened, so never write to it then.
            if sys.stdout is None:
                raise OutputError(f"output '{self.id}': stdout is closed (started with '>&-'?); "
                                  "set outputs[].path to a file, or give the daemon a stdout")
            try:
                fd = sys.stdout.fileno()
            except (OSError, ValueError):  # a replaced sys.stdout (a test's capture): write through it
                self._text = sys.stdout
                self._fd = -1
                return
            try:
                os.fstat(fd)
            except OSError as exc:
                raise OutputError(f"output '{self.id}': stdout cannot be written: {exc.strerror}") from exc
            sys.stdout.flush()
            self._fd = fd
            return
        path = Path(self.config.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"output '{self.id}': cannot open {path}: {exc.strerror}") from exc
        self._fd, self._own_fd = fd, True
        self._size = os.fstat(fd).st_size
        self._continue_on_a_fresh_line(path)

    def _continue_on_a_fresh_line(self, path: Path) -> None:
        if self._size == 0:
            return
        with open(path, "rb") as existing:
            existing.seek(self._size - 1)
            if existing.read(1) == b"\n":
                return
        log.warning("output '%s': %s ends in a partial line (a write cut short by a full disk or a crash "
                    "in an earlier run); continuing on a new line", self.id, path)
        try:
            self._write_whole(b"\n")
        except OSError as exc:
            raise OutputError(f"output '{self.id}': cannot write to {path}: {exc.strerror}") from exc

    def write_record(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                if self.closed_by_peer:
                    raise OutputError(f"output '{self.id}': stdout was closed by its reader")
                raise OutputError(f"output '{self.id}': not open")
            try:
                self._write_whole(data)
            except BrokenPipeError as exc:
                self._stdout_closed()
                raise OutputError(f"output '{self.id}': stdout was closed by its reader") from exc
            except OSError as exc:
                where = "stdout" if self.is_stdout else self.config.path
                self.last_error = f"cannot write to {where}: {exc.strerror or exc}"
                raise OutputError(f"output '{self.id}': {self.last_error}") from exc
            self.published += 1
            self.last_error = None

    @property
    def heartbeats_on(self) -> bool:
        return self.config.heartbeat if self.config.heartbeat is not None else not self.is_stdout

    def heartbeat(self, record: dict[str, Any]) -> None:
        if self.heartbeats_on:
            self.write_record(record)

    def _write_whole(self, data: bytes) -> None:
        """All of `data` or none of it (files); pipes and terminals get the rest retried."""
        fd = self._fd
        assert fd is not None
        if self._text is not None:
            self._text.write(data.decode())
            self._text.flush()
            return
        if not self._own_fd:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            return
        try:
            written = os.write(fd, data)
        except OSError:
            self._cut_back()
            raise
        if written != len(data):
            self._cut_back()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" ({written} of {len(data)} bytes written)")
        self._size += written

    def _cut_back(self) -> None:
        # a torn record would corrupt the line after it: remove what part of it reached the file
        try:
            os.ftruncate(self._fd, self._size)  # type: ignore[arg-type]
        except OSError as exc:
            log.error("output '%s': cannot remove a partial record from %s: %s", self.id, self.config.path, exc)

    def _stdout_closed(self) -> None:
        # Point fd 1 at /dev/null so that Python's own flush at exit does not fail a second time.
        self.closed_by_peer = True
        self._fd = None
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)

    def close(self) -> None:
        """Never raises: one output's error must not stop the shutdown of the others."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None and self._own_fd:
                try:
                    os.close(fd)
                except OSError as exc:
                    log.error("output '%s': closing %s failed: %s", self.id, self.config.path, exc)
