"""A real Triton Inference Server on loopback, serving an ONNX file, that a test can kill, freeze and restart.

The server runs from its own venv (`make triton-server` builds `.venv-triton`: nvidia-pytriton pins numpy<2,
which the product's venv must not get); EDGEINFER_TRITON_PYTHON points elsewhere. Each server gets free ports,
so tests (and engineers) never collide. The server is a process tree (the pytriton script, tritonserver, the
Python backend stub, all in one process group): kill / freeze signal the whole group at once, as a crashed or
hung host would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVE_SCRIPT = Path(__file__).with_name("triton_serve_onnx.py")
REPOSITORY_SCRIPT = Path(__file__).with_name("triton_serve_repository.py")
EXAMPLE_REPOSITORY = REPO / "examples" / "triton" / "model_repository"


def server_python() -> Path:
    return Path(os.environ.get("EDGEINFER_TRITON_PYTHON", REPO / ".venv-triton" / "bin" / "python"))


def require_server_python() -> Path:
    python = server_python()
    if not python.exists():
        pytest.skip(f"no Triton server venv at {python}: run `make triton-server` (make test does)")
    return python


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


class TritonServer:
    def __init__(self, onnx: Path, log_path: Path, name: str = "yolo", max_batch: int = 8, threads: int = 0,
                 queue_delay_us: int = 0, instances: int = 1, repository: Path | None = None):
        """`repository`: serve that model repository (its python-backend models and ensembles) with `onnx` as
        its network, instead of binding `onnx` through pytriton (`name` is then the model waited for)."""
        self.python = require_server_python()
        self.onnx = Path(onnx)
        self.name = name
        self.log_path = log_path
        self.grpc_port, self.http_port, self.metrics_port = free_ports(3)
        if repository is not None:
            self.script = REPOSITORY_SCRIPT
            self.args = [str(repository), "--onnx", str(self.onnx), "--workspace",
                         str(log_path.with_name(log_path.stem + "-workspace")), "--instances", str(instances),
                         "--threads", str(threads)]
        else:
            self.script = SERVE_SCRIPT
            self.args = [str(self.onnx), "--name", name, "--max-batch", str(max_batch), "--threads", str(threads),
                         "--queue-delay-us", str(queue_delay_us), "--instances", str(instances)]
        self.proc: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 90.0) -> TritonServer:
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [str(self.python), str(self.script), "--grpc-port", str(self.grpc_port),
             "--http-port", str(self.http_port), "--metrics-port", str(self.metrics_port), *self.args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.grpc_url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"Triton server exited ({self.proc.returncode}):\n{self.log_tail()}")
                try:
                    # every model (a second one loads after the first), not only ours
                    if client.is_model_ready(self.name, client_timeout=1.0) and client.is_server_ready(
                            client_timeout=1.0):
                        return
                except Exception:  # not listening yet
                    pass
                time.sleep(0.2)
            raise RuntimeError(f"Triton server not ready after {timeout:.0f} s:\n{self.log_tail()}")
        finally:
            client.close()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return ""

    def _signal(self, sig: int) -> None:
        # to the whole process group at once (start_new_session: its id is the script's pid): stopping the
        # tritonserver and its Python backend stub one after the other lets one see the other hang, and the
        # server's Python backend then aborts on a shared-memory lock
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """As a crashed host: every process of the server dies at once, no goodbye on the socket. The Python
        backend's shared-memory regions it leaves in /dev/shm are removed afterwards (the machine's, not the
        daemon's: a crashed host would lose them with its memory)."""
        if self.proc is None:
            return
        tree = process_tree(self.proc.pid)
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 5
        for pid in tree:  # grandchildren are reaped by init: wait until they are gone or zombies (ports freed)
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        # pytriton names them pytrtion<pid>-...; the repository script tritontest<pid>-... (the script's pid)
        for prefix in (f"pytrtion{self.proc.pid}-", f"tritontest{self.proc.pid}-"):
            for region in Path("/dev/shm").glob(prefix + "*"):
                region.unlink(missing_ok=True)
        self.proc = None

    def freeze(self) -> None:
        """As a hung host: connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.thaw()
        self.kill()


@contextmanager
def demo_server(onnx: Path, log: Path) -> Iterator[TritonServer]:
    """A started one-thread test server of a model, stopped afterwards; skips the test where the server's Python
    environment is missing (`require_server_python`)."""
    require_server_python()
    server = TritonServer(onnx, log, threads=1).start()
    try:
        yield server
    finally:
        server.stop()
