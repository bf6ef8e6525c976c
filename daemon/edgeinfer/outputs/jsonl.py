"""JSON Lines: one record per line to stdout or a file (append).

Each record goes out in one `os.write` of the whole line, unbuffered, so a pipe sees it at once and a failed
write leaves nothing half-written behind: a short write to a file (disk full) is cut back off the file. A
file that ends in a partial line (a crash or a full disk in an earlier run) is continued on a fresh line.

Quiet by default in the field: no heartbeats unless asked for (`heartbeat: true`, optionally thinned to one per
`heartbeat_interval_s` plus every state change), and a file can rotate itself by size (`rotate: {max_bytes,
keep}`). An outside logrotate works too: a file renamed away (logrotate's default) is noticed within a second
and reopened at its path; `copytruncate` is safe because every record is appended at the file's current end.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import OutputError, RecordOutput
from .schema import JsonlOutputConfig

if TYPE_CHECKING:
    from ..runtime import RuntimeContext

log = logging.getLogger(__name__)

PATH_CHECK_S = 1.0  # how often a file output looks whether its path still names the file it writes


def _writable_problem(path: Path) -> str | None:
    """Why `path` cannot be opened for appending (nothing is created): an existing file is opened for append
    and closed; else an unnamed O_TMPFILE is tried in the nearest existing folder (refused by /proc, /sys and
    read-only mounts, where `access()` says yes to root)."""
    try:
        if path.exists():
            if path.is_dir():
                return f"{path} is a directory"
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC))
            return None
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            return f"{folder} is not a folder"
        if not hasattr(os, "O_TMPFILE"):
            return None if os.access(folder, os.W_OK) else f"no permission to create files in {folder}"
        try:
            os.close(os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR):
                return f"cannot create files in {folder}: {exc.strerror}"
            # no O_TMPFILE there (/proc, /sys, some network file systems): a named probe, removed at once
            probe = folder / f".edgeinfer-probe-{os.getpid()}-{threading.get_ident()}"
            try:
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            except OSError as probe_exc:
                return f"cannot create files in {folder}: {probe_exc.strerror}"
            os.unlink(probe)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror}"
    return None


class JsonlOutput(RecordOutput):
    config: JsonlOutputConfig

    @classmethod
    def preflight_config(cls, config: JsonlOutputConfig) -> list[str]:  # type: ignore[override]
        # checked at start and before a reload replaces the running pipeline (a reload to a path that
        # cannot be written is refused while the old pipeline goes on)
        if config.path == "-":
            return []
        problem = _writable_problem(Path(config.path))
        return [f"path: {problem}"] if problem else []

    def __init__(self, config: JsonlOutputConfig, output_id: str):
        super().__init__(config, output_id)
        self._lock = threading.Lock()  # records and heartbeats come from different threads
        self._fd: int | None = None
        self._own_fd = False
        self._size = 0  # bytes in the file after the last whole record (files only)
        self._text: Any = None  # a stdout without a file descriptor
        self._last_beat = -1e18  # monotonic time of the last heartbeat written
        self._last_beat_state: str | None = None
        self._next_path_check = 0.0  # when to look whether an outside logrotate moved the file away
        self.rotations = 0

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
        self._open_file()

    def _open_file(self) -> None:
        path = Path(self.config.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"output '{self.id}': cannot open {path}: {exc.strerror}") from exc
        self._fd, self._own_fd = fd, True
        self._size = os.fstat(fd).st_size
        self._next_path_check = time.monotonic() + PATH_CHECK_S
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
            if self._fd is None and self._own_fd:
                self._open_file()  # a reopen after rotation failed: try again (OutputError if it still fails)
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
        return self.config.heartbeat

    def heartbeat(self, record: dict[str, Any]) -> None:
        if not self.config.heartbeat:
            return
        now, state = time.monotonic(), record.get("state")
        if (now - self._last_beat < self.config.heartbeat_interval_s and state == self._last_beat_state
                and not record.get("final")):  # the final heartbeat (the run's counts) is never thinned
            return
        self._last_beat, self._last_beat_state = now, state
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
        fd = self._follow_the_path(fd)
        # the file's real end (not our count): an outside `logrotate copytruncate` may have emptied it
        self._size = os.lseek(fd, 0, os.SEEK_END)
        rotate = self.config.rotate
        if rotate is not None and self._size and self._size + len(data) > rotate.max_bytes:
            fd = self._rotate(rotate.keep)
        try:
            written = os.write(fd, data)
        except OSError:
            self._cut_back()
            raise
        if written != len(data):
            self._cut_back()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" ({written} of {len(data)} bytes written)")
        self._size += written

    def _follow_the_path(self, fd: int) -> int:
        """Reopen at the configured path once a second if the file we hold is no longer there (renamed or deleted
        by logrotate or an operator), so records never go on into a rotated or unlinked file."""
        now = time.monotonic()
        if now < self._next_path_check:
            return fd
        self._next_path_check = now + PATH_CHECK_S
        try:
            same = os.path.samestat(os.stat(self.config.path), os.fstat(fd))
        except OSError:
            same = False
        if same:
            return fd
        log.info("output '%s': %s was moved or removed; reopening it", self.id, self.config.path)
        os.close(fd)
        self._fd = None
        self._open_file()
        return self._fd  # type: ignore[return-value]

    def _rotate(self, keep: int) -> int:
        """PATH -> PATH.1 -> ... -> PATH.<keep> (the oldest dropped), then a fresh PATH."""
        path = self.config.path
        os.close(self._fd)  # type: ignore[arg-type]
        self._fd = None
        for index in range(keep - 1, 0, -1):
            if os.path.exists(f"{path}.{index}"):
                os.replace(f"{path}.{index}", f"{path}.{index + 1}")
        os.replace(path, f"{path}.1")
        self.rotations += 1
        self._open_file()
        return self._fd  # type: ignore[return-value]

    def _cut_back(self) -> None:
        # a torn record would corrupt the line after it: remove what part of it reached the file
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._size)
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
            own, self._own_fd = self._own_fd, False
            if fd is not None and own:
                try:
                    os.close(fd)
                except OSError as exc:
                    log.error("output '%s': closing %s failed: %s", self.id, self.config.path, exc)
