"""The systemd notification protocol (sd_notify) over a plain AF_UNIX datagram socket, without libsystemd.

systemd passes `NOTIFY_SOCKET` (a filesystem path, or an abstract socket name when it starts with `@`) to a
`Type=notify` service; each datagram holds newline-separated `KEY=VALUE` fields (READY=1, WATCHDOG=1,
STATUS=..., STOPPING=1). With `WatchdogSec=` set, systemd also passes `WATCHDOG_USEC` (and `WATCHDOG_PID`,
the process expected to ping); the service must send WATCHDOG=1 more often than that - we use half.

Without NOTIFY_SOCKET (not run by systemd) every method is a no-op. Send errors are logged at a bounded
rate and never raised: a missing systemd must not stop inference.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from ..logutil import RateLimitedLog

log = logging.getLogger(__name__)


def _socket_address(notify_socket: str) -> str | bytes:
    if notify_socket.startswith("@"):
        return b"\0" + notify_socket[1:].encode()  # Linux abstract namespace
    return notify_socket


class SystemdNotifier:
    """Sends sd_notify messages. Methods return True when a datagram was sent."""

    def __init__(self, notify_socket: str | None, watchdog_usec: int | None = None,
                 watchdog_pid: int | None = None):
        self.notify_socket = notify_socket or None
        self._address = _socket_address(notify_socket) if notify_socket else None
        # systemd names the process that must ping; anyone else (a child that inherited the environment)
        # must stay quiet, or a hung main process would be kept alive by its child.
        ours = watchdog_pid is None or watchdog_pid == os.getpid()
        self._watchdog_usec = watchdog_usec if (watchdog_usec and watchdog_usec > 0 and ours) else None
        self._errors = RateLimitedLog(log)
        self.sent = 0
        self.send_errors = 0
        self._socket: socket.socket | None = None
        if self._address is not None:
            # Made once, here, so threads that notify concurrently never race to create it.
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # Never block the caller on a full receive queue: a lost ping is cheaper than a stalled pipeline.
            self._socket.setblocking(False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        env = os.environ if environ is None else environ
        return cls(
            env.get("NOTIFY_SOCKET"),
            watchdog_usec=_parse_int(env.get("WATCHDOG_USEC"), "WATCHDOG_USEC"),
            watchdog_pid=_parse_int(env.get("WATCHDOG_PID"), "WATCHDOG_PID"),
        )

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1 (half of systemd's WatchdogSec), or None when not expected."""
        if self._watchdog_usec is None or not self.enabled:
            return None
        return self._watchdog_usec / 2_000_000

    def notify(self, **fields: object) -> bool:
        """Send one datagram; keyword names are upper-cased into the protocol's keys (ready=1 -> READY=1)."""
        sock = self._socket
        if sock is None or self._address is None or not fields:
            return False
        lines = []
        for key, value in fields.items():
            # A newline inside a value would start a new (forged) field.
            text = str(value).replace("\n", " ")
            lines.append(f"{key.upper()}={text}")
        data = "\n".join(lines).encode()
        try:
            sock.sendto(data, self._address)
        except OSError as error:
            self.send_errors += 1
            self._errors.log(logging.WARNING, "send", "sd_notify to %s failed: %s", self.notify_socket, error)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify(ready=1)
        return self.notify(ready=1, status=status)

    def watchdog(self) -> bool:
        if self.watchdog_interval_s is None:
            return False
        return self.notify(watchdog=1)

    def status(self, text: str) -> bool:
        return self.notify(status=text)

    def stopping(self) -> bool:
        return self.notify(stopping=1)

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()


def _parse_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        log.warning("ignoring %s=%r: not an integer", name, value)
        return None
