"""ROS 2 in tests: the environment that finds the interface packages `make ros` built into .ros/install, a
ROS_DOMAIN_ID of our own (other test runs share this machine), and a peer process (ros_peer.py) that
subscribes, publishes images and calls services over real DDS while the daemon runs in another process.

rclpy is never imported into the pytest process: its wheel's bootstrapper re-executes the interpreter."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / ".ros" / "install"
SITE = INSTALL / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
PEER = Path(__file__).with_name("ros_peer.py")
# one domain per pytest process: concurrent runs on this machine do not hear each other
DOMAIN_ID = str(1 + os.getpid() % 100)


def ros_unavailable() -> str | None:
    """Why the ROS tests cannot run here, or None."""
    if importlib.util.find_spec("rclpy") is None:
        return "rclpy is not installed (make ros installs the ROS 2 wheels)"
    for package in ("vision_msgs", "edgeinfer_msgs"):
        if not (SITE / package).is_dir():
            return f"{package} is not built in {INSTALL} (run make ros)"
    return None


def _prepend(value: str, old: str | None) -> str:
    return value + (os.pathsep + old if old else "")


def ros_env(extra: dict | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = _prepend(str(SITE), env.get("PYTHONPATH"))
    env["LD_LIBRARY_PATH"] = _prepend(str(INSTALL / "lib"), env.get("LD_LIBRARY_PATH"))
    env["AMENT_PREFIX_PATH"] = _prepend(str(INSTALL), env.get("AMENT_PREFIX_PATH"))
    env["ROS_DOMAIN_ID"] = DOMAIN_ID
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # never talk to other hosts
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class RosPeer:
    """ros_peer.py in its own process; its JSON events are collected as they arrive."""

    def __init__(self, spec: dict, log_path: Path):
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._stderr = log_path.open("w")
        self.log_path = log_path
        self.proc = subprocess.Popen([sys.executable, str(PEER), json.dumps(spec)], env=ros_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(event)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.events)

    def messages(self, name: str) -> list[dict]:
        return [e for e in self.snapshot() if e.get("event") == "msg" and e["name"] == name]

    def wait_for(self, predicate: Callable[[list[dict]], object], timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate(self.snapshot())
            if found:
                return found
            if self.proc.poll() is not None:
                found = predicate(self.snapshot())
                if found:
                    return found
                raise AssertionError(f"ROS peer exited ({self.proc.returncode}) before {what}:\n{self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.stderr()}")

    def send(self, command: dict) -> None:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        self._stderr.flush()
        return self.log_path.read_text()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()


def stamp_s(msg: dict) -> float:
    stamp = msg["header"]["stamp"]
    return stamp["sec"] + stamp["nanosec"] * 1e-9
