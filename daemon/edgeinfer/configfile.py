"""Reading a config file without trusting what the path names.

A config path can name a FIFO (opening it for reading blocks until a writer comes), a device (/dev/zero reads
without end) or a file of any size. Only a regular file is read, at most `MAX_CONFIG_BYTES` of it: the file is
opened non-blocking (a FIFO then opens at once), checked with fstat on the open descriptor (no race with a
rename), and read with a bound.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Real configs are a few kB; 1 MiB leaves room for long comments and many sources while bounding the read.
MAX_CONFIG_BYTES = 1 << 20

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class UnreadableFile(OSError):
    """The path cannot be read as a config/manifest: the message says why in words."""


def file_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_regular_file(path: str | Path, limit: int = MAX_CONFIG_BYTES, what: str = "config file") -> bytes:
    """The whole file, when it is a regular file of at most `limit` bytes; else UnreadableFile. Never blocks
    on a FIFO and never reads more than `limit` + 1 bytes."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise UnreadableFile(exc.errno, exc.strerror or str(exc)) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"{path} is {file_kind(info.st_mode)}, not a regular file; a {what} must be one")
        if info.st_size > limit:
            raise UnreadableFile(f"{path} is {info.st_size} bytes; a {what} may be at most {limit} bytes")
        chunks, size = [], 0
        while size <= limit:  # the file may grow between fstat and read: the bound still holds
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UnreadableFile(f"{path} grew past {limit} bytes while read; a {what} may be at most {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
