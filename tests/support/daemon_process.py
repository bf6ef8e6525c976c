"""Run the real daemon as a child process, as systemd would: a real unix datagram socket as NOTIFY_SOCKET,
WATCHDOG_USEC set, records and heartbeats read back from its JSONL output file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml


class NotifyListener:
    """Receives sd_notify datagrams on a unix socket and keeps them with their arrival time."""

    def __init__(self, path: Path):
        self.path = path
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self._sock.close()


class DaemonProcess:
    def __init__(self, tmp_path: Path, config: dict, watchdog_usec: int | None = 200_000,
                 extra_outputs: list[dict] = (), env: dict | None = None):
        self.out = tmp_path / "out.jsonl"
        # heartbeats are off in file outputs by default; the tests read them from this file
        config = dict(config, outputs=[{"type": "jsonl", "path": str(self.out), "heartbeat": True}, *extra_outputs])
        self.config_path = tmp_path / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.notify = NotifyListener(tmp_path / "notify.sock")
        env = dict(os.environ if env is None else env, NOTIFY_SOCKET=str(self.notify.path), PYTHONUNBUFFERED="1")
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.stderr_path = tmp_path / "stderr.log"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeinfer", "run", str(self.config_path)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=self._stderr)

    def lines(self) -> list[dict]:
        if not self.out.exists():
            return []
        text = self.out.read_text()
        return [json.loads(line) for line in text.splitlines()[: text.count("\n")]]

    def heartbeats(self) -> list[dict]:
        return [r for r in self.lines() if r["type"] == "heartbeat"]

    def records(self) -> list[dict]:
        return [r for r in self.lines() if r["type"] == "detections"]

    def wait_for(self, predicate: Callable[[list[dict]], object], timeout: float, what: str):
        """Poll the output until predicate(lines) is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate(self.lines())
            if found:
                return found
            if self.proc.poll() is not None:
                found = predicate(self.lines())
                if found:
                    return found
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {what}:\n{self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}:\n{self.stderr()}")

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text()[-4000:]

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.notify.close()
            self._stderr.close()


def first(items, predicate):
    return next((x for x in items if predicate(x)), None)
