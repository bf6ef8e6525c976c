"""sd_notify over real AF_UNIX datagram sockets, and the supervisor's watchdog pings seen on one."""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest

from edgeinfer.watchdog import EntitySpec, Supervisor, SystemdNotifier, WatchdogConfig
from support.virtual_time import VirtualTime

PERIOD = WatchdogConfig().period_ms / 1000  # seconds, the default period (0.05)


def no_grace(**fields) -> WatchdogConfig:
    """These tests count cycles from 0, so the start-up grace (tested on its own) is switched off."""
    return WatchdogConfig(**{"startup_grace_ms": 0, **fields})


@pytest.fixture
def listener(tmp_path):
    """A datagram socket bound to a filesystem path, as systemd's notify socket is."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield str(path), sock
    sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued, without waiting for more."""
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2.0)
    return messages


def test_messages_reach_a_filesystem_socket(listener):
    path, sock = listener
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "5000000"})
    assert notifier.enabled
    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1"
    assert notifier.ready("warmed up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=warmed up"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.status("SAFE_STOP: cam EXPIRED\nFAKE=1")  # a newline must not forge a field
    assert sock.recv(4096) == b"STATUS=SAFE_STOP: cam EXPIRED FAKE=1"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert notifier.notify(extend_timeout_usec=30_000_000)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=30000000"
    assert notifier.sent == 6
    notifier.close()
    assert not notifier.ready()


def test_messages_reach_an_abstract_socket():
    name = f"edgeinfer-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert notifier.stopping()
        assert [sock.recv(4096), sock.recv(4096)] == [b"READY=1", b"STOPPING=1"]
    finally:
        sock.close()


def test_watchdog_interval_is_half_of_watchdog_usec(listener):
    path, _ = listener
    assert SystemdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "5000000"}).watchdog_interval_s \
        == 2.5
    assert SystemdNotifier.from_env({"NOTIFY_SOCKET": path}).watchdog_interval_s is None
    assert SystemdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "soon"}).watchdog_interval_s \
        is None
    # without a notify socket there is nobody to ping
    assert SystemdNotifier.from_env({"WATCHDOG_USEC": "5000000"}).watchdog_interval_s is None


def test_watchdog_pid_must_be_ours(listener):
    path, sock = listener
    ours = SystemdNotifier.from_env(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())})
    theirs = SystemdNotifier.from_env(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert ours.watchdog_interval_s == 0.5
    assert theirs.watchdog_interval_s is None
    assert not theirs.watchdog()
    assert ours.watchdog()
    assert drain(sock) == [b"WATCHDOG=1"]


def test_without_notify_socket_everything_is_a_no_op():
    notifier = SystemdNotifier.from_env({})
    assert not notifier.enabled
    assert not any([notifier.ready(), notifier.watchdog(), notifier.status("x"), notifier.stopping()])
    assert notifier.sent == 0 and notifier.send_errors == 0


def test_send_errors_are_counted_and_logged_at_a_bounded_rate(tmp_path, caplog):
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING, logger="edgeinfer.watchdog.sd_notify"):
        results = [notifier.status("hello") for _ in range(50)]
    assert results == [False] * 50
    assert notifier.send_errors == 50
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1


def test_supervisor_stops_pinging_in_safe_stop(listener):
    path, sock = listener
    # pings allowed every 30 ms, so the 50 ms supervisor pings at every cycle while healthy
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000"})
    time = VirtualTime()
    t0 = time.clock()
    spec = EntitySpec("cam", "source", alive_cycles=2, safety_relevant=True)
    supervisor = Supervisor(no_grace(alive_tolerance_cycles=1), [spec], notifier=notifier,
                            clock=time.clock, sleep=time.sleep)
    supervisor.start()
    per_cycle: list[list[bytes]] = []
    try:
        time.wait_until_asleep()
        for n in range(12):
            time.set(t0 + (n + 0.5) * PERIOD)
            if n < 3:
                supervisor.alive("cam")
            time.set(t0 + (n + 1) * PERIOD)
            time.wait_until_asleep()
            per_cycle.append(drain(sock))
    finally:
        time.release()
        supervisor.stop()
    # last alive 2: first failing at 2 + 2 + 1 = 5, FAILED there (FAULT), EXPIRED at 5 + 1 = 6 (SAFE_STOP)
    for n in range(5):
        assert per_cycle[n] == [b"WATCHDOG=1"], n
    # STATUS= says which supervision failed, in ms and config keys
    assert per_cycle[5] == [b"STATUS=FAULT: cam FAILED (alive: no frame for 150 ms; 2 cycle(s) + "
                            b"watchdog.alive_tolerance_cycles 1 x period_ms 50)", b"WATCHDOG=1"]
    assert per_cycle[6] == [b"STATUS=SAFE_STOP: cam EXPIRED (alive: no frame for 200 ms; 2 cycle(s) + "
                            b"watchdog.alive_tolerance_cycles 1 x period_ms 50)"]
    assert per_cycle[7:] == [[]] * 5  # silence: systemd's WatchdogSec now runs out


def test_supervisor_keeps_pinging_when_configured_to(listener):
    path, sock = listener
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000"})
    time = VirtualTime()
    spec = EntitySpec("cam", "source", alive_cycles=1, safety_relevant=True)
    config = no_grace(alive_tolerance_cycles=0, on_safe_stop=["publish_status", "exit"])
    supervisor = Supervisor(config, [spec], notifier=notifier, clock=time.clock)
    supervisor.start(background=False)
    for _ in range(6):
        time.advance(PERIOD)
        supervisor.poll()
    assert (supervisor.snapshot.cycle, supervisor.state.value) == (5, "SAFE_STOP")
    messages = drain(sock)
    # tolerance 0: the first failing step (cycle 1: two cycles without alive > 1) is already SAFE_STOP, and
    # the status goes out between the pings of steps 0 and 1
    assert messages == [b"WATCHDOG=1", b"STATUS=SAFE_STOP: cam EXPIRED (alive: no frame since start (100 ms); "
                                       b"1 cycle(s) + watchdog.alive_tolerance_cycles 0 x period_ms 50)",
                        b"WATCHDOG=1", b"WATCHDOG=1", b"WATCHDOG=1", b"WATCHDOG=1", b"WATCHDOG=1"]
    assert supervisor.exit_code == 3
