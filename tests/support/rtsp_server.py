"""A test RTSP server on loopback, and a helper that runs it as a child process.

Run as a script with Debian's python (the venv's python cannot import `gi`):

    /usr/bin/python3 tests/integration/rtsp_server.py 8554 [--path /test] [--size 320x240] [--fps 30]

It serves a live H.264 test pattern at rtsp://127.0.0.1:PORT/test, prints "READY <url>" once it accepts
connections and runs until killed (SIGTERM/SIGINT end it cleanly). Needs the apt packages python3-gi
python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base
gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly (x264enc).

Imported from the venv, this module offers `RtspServerProcess` (start / kill / stop, waits for the ready
line) and `rtsp_server_unavailable()`; only the standard library is imported at the top.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

SYSTEM_PYTHON = "/usr/bin/python3"
READY_PREFIX = "READY "
SCRIPT = Path(__file__).resolve()


def launch_description(width: int, height: int, fps: int) -> str:
    # Short GOP and SPS/PPS with every key frame: a client joining (or rejoining) decodes within ~0.5 s.
    return (
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
        f"framerate={fps}/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={max(fps // 2, 1)} "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


def serve(port: int, path: str, width: int, height: int, fps: int) -> int:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_description(width, height, fps))
    factory.set_shared(True)  # one encoder for all clients
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"{READY_PREFIX}rtsp://127.0.0.1:{port}{path}", flush=True)
    loop.run()
    return 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rtsp_server_unavailable() -> str | None:
    """Why the server cannot run here, or None when it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found"
    check = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert Gst.ElementFactory.find('x264enc'), 'x264enc missing (gstreamer1.0-plugins-ugly)'")
    result = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["?"])[-1]
        return f"{SYSTEM_PYTHON} cannot run GStreamer's RTSP server: {last_line}"
    return None


class RtspServerProcess:
    """The server script as a child process on a fixed port, so it can be killed and started again."""

    def __init__(self, port: int | None = None, path: str = "/test", fps: int = 30):
        self.port = port if port is not None else free_port()
        self.path = path
        self.fps = fps
        self.url = f"rtsp://127.0.0.1:{self.port}{path}"
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def start(self, timeout: float = 20.0) -> RtspServerProcess:
        """Start the server and return once it accepts connections."""
        if self.running:
            raise RuntimeError("server already running")
        command = [SYSTEM_PYTHON, str(SCRIPT), str(self.port), "--path", self.path, "--fps", str(self.fps)]
        deadline = time.monotonic() + timeout
        # The port of a server killed a moment ago can still be busy: retry until the deadline.
        while True:
            # stderr to a file: an unread pipe would fill up and stall the server on GStreamer warnings.
            self._stderr = tempfile.TemporaryFile()
            self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr)
            error = self._wait_ready(self._process, deadline)
            if error is None:
                return self
            self.kill()
            if time.monotonic() >= deadline:
                raise RuntimeError(f"RTSP server on port {self.port} not ready: {error}")
            time.sleep(0.2)

    def _wait_ready(self, process: subprocess.Popen[bytes], deadline: float) -> str | None:
        output = b""
        stdout = process.stdout.fileno() if process.stdout is not None else -1
        while time.monotonic() < deadline:
            readable, _, _ = select.select([stdout], [], [], 0.1)
            if readable:
                chunk = os.read(stdout, 4096)
                if not chunk:
                    break
                output += chunk
                if READY_PREFIX.encode() in output and output.endswith(b"\n"):
                    return None
            elif process.poll() is not None:
                break
        return (self.stderr_text() or output.decode(errors="replace")).strip() or "no ready line in time"

    def stderr_text(self) -> str:
        """What the server wrote to stderr so far (for failure messages)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets open but answers nothing (a hung camera)."""
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, like a crash or a power cut of the camera: no RTSP TEARDOWN reaches the clients."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(timeout=10)
            self._close_pipes()
            self._process = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end within 5 s."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout=10)
            self._close_pipes()
            self._process = None

    def _close_pipes(self) -> None:
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> RtspServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve a live H.264 test pattern over RTSP on loopback.")
    parser.add_argument("port", type=int)
    parser.add_argument("--path", default="/test")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    return serve(args.port, args.path, width, height, args.fps)


if __name__ == "__main__":
    sys.exit(main())
