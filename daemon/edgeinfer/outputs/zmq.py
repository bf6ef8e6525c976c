"""ZeroMQ output for robots without ROS: records on a PUB socket, commands on a REP control socket.

Every record goes out as two frames, `[topic, json]`. Topics are `detections/<source>` (`classifications/<source>`
and `dense/<source>` for those results) and `heartbeat`, so a subscriber picks what it wants by ZeroMQ's prefix
filter. Sends never block: a subscriber that reads too slowly loses messages beyond `sndhwm` inside ZeroMQ
instead of stalling the pipeline.

The control socket is served by one thread. The request/reply rules live in `ControlProtocol`, which knows no
sockets; the thread only moves frames between it and the REP socket. See docs/zmq.md for the wire protocol.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..lazy import lazy_import
from ..logutil import RateLimitedLog
from .base import Output, OutputConfigBase, OutputError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'edgeinfer[zmq]'"
MAX_REQUEST_BYTES = 64 * 1024
# Beyond this ZeroMQ drops the peer's connection without a reply; it only keeps a rogue client from making the
# daemon buffer a huge message. Between MAX_REQUEST_BYTES and this, the client gets an error reply.
HARD_MAX_REQUEST_BYTES = 1024 * 1024
CONTROL_POLL_MS = 100  # how often the control thread looks at its stop flag: bounds close() latency
CLOSE_TIMEOUT_S = 0.8  # leaves close() within 1 s even when a handler hangs

ControlHandler = Callable[[str, dict], "dict | None"]

_TCP_ENDPOINT = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/\[\]]+):(?P<port>\d+|\*)$")


def _check_endpoint(value: str, key: str) -> str:
    if value.startswith("tcp://"):
        match = _TCP_ENDPOINT.match(value)
        if match is None:
            raise ValueError(f"{key} {value!r} must look like tcp://HOST:PORT (e.g. tcp://*:5560, "
                             f"tcp://127.0.0.1:5560; PORT may be * for any free port)")
        port = match.group("port")
        if port != "*" and not 0 < int(port) < 65536:
            raise ValueError(f"{key} {value!r}: port {port} is outside 1..65535")
        return value
    for scheme in ("ipc://", "inproc://"):
        if value.startswith(scheme):
            if len(value) == len(scheme):
                raise ValueError(f"{key} {value!r} names no address after {scheme}")
            return value
    raise ValueError(f"{key} {value!r} must start with tcp://, ipc:// or inproc:// "
                     f"(e.g. tcp://*:5560 or ipc:///run/edgeinfer/detections)")


class ZmqOutputConfig(OutputConfigBase):
    type: Literal["zmq"] = "zmq"
    endpoint: str = Field(default="tcp://*:5560", description="PUB socket address")
    bind: bool = Field(default=True, description="bind the PUB socket (false: connect to a broker or peer)")
    control_endpoint: str | None = Field(default="tcp://127.0.0.1:5561",
                                         description="REP socket for commands, always bound; null: no control")
    sndhwm: int = Field(default=100, ge=1, le=1_000_000,
                        description="messages queued per subscriber before ZeroMQ drops for that subscriber")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_form(cls, value: str) -> str:
        return _check_endpoint(value, "endpoint")

    @field_validator("control_endpoint")
    @classmethod
    def _control_endpoint_form(cls, value: str | None) -> str | None:
        return None if value is None else _check_endpoint(value, "control_endpoint")

    @model_validator(mode="after")
    def _consistent(self) -> ZmqOutputConfig:
        if not self.bind and self.endpoint.startswith("tcp://*:"):
            raise ValueError(f"endpoint {self.endpoint!r}: with bind: false the socket connects, "
                             f"so it needs a host (e.g. tcp://192.168.1.10:5560), not '*'")
        if not self.bind and self.endpoint.endswith(":*"):
            raise ValueError(f"endpoint {self.endpoint!r}: with bind: false the socket connects, "
                             f"so it needs a port, not '*'")
        # two `:*` endpoints are two different free ports, so only fixed addresses can clash
        if self.bind and self.endpoint == self.control_endpoint and not self.endpoint.endswith(":*"):
            raise ValueError(f"endpoint and control_endpoint are both {self.endpoint!r}; give them different "
                             f"addresses")
        return self


class UnknownCommand(Exception):
    """A handler may raise this (or return None) for a command it does not serve."""


class ControlProtocol:
    """The control rules without any socket: request frames in, reply bytes out, and it never raises.

    Requests are one frame holding a JSON object with a string `cmd`; replies are JSON objects with `ok`.
    """

    def __init__(self) -> None:
        self._handler: ControlHandler | None = None
        self._commands: tuple[str, ...] | None = None
        self.requests = 0
        self.errors = 0

    def set_handler(self, handler: ControlHandler | None, commands: Iterable[str] | None = None) -> None:
        # one tuple assignment, so the serving thread never sees a handler with the wrong command list
        self._handler, self._commands = handler, (tuple(commands) if commands is not None else None)

    def handle(self, frames: list[bytes]) -> bytes:
        self.requests += 1
        try:
            reply = self._reply(frames)
        except Exception as exc:  # the REP loop must always answer, whatever went wrong in here
            reply = self._error(f"internal error: {type(exc).__name__}: {exc}")
        try:
            return json.dumps(reply, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            return json.dumps(self._error(f"reply is not JSON-serializable: {exc}")).encode()

    def _error(self, message: str) -> dict[str, Any]:
        self.errors += 1
        return {"ok": False, "error": message}

    def _reply(self, frames: list[bytes]) -> dict[str, Any]:
        if len(frames) != 1:
            return self._error(f"expected one frame holding a JSON object, got {len(frames)} frames")
        body = frames[0]
        if len(body) > MAX_REQUEST_BYTES:
            return self._error(f"request is {len(body)} bytes; the limit is {MAX_REQUEST_BYTES}")
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            return self._error(f"request is not valid JSON: {exc}")
        if not isinstance(request, dict):
            return self._error(f'request must be a JSON object like {{"cmd": "ping"}}, '
                               f"got {type(request).__name__}")
        cmd = request.get("cmd")
        if not isinstance(cmd, str):
            return self._error('request needs a string "cmd" field, e.g. {"cmd": "ping"}')
        if cmd == "ping":
            return {"ok": True, "reply": "pong"}
        handler, commands = self._handler, self._commands
        if handler is None or (commands is not None and cmd not in commands):
            return self._unknown(cmd, commands if handler is not None else ())
        try:
            reply = handler(cmd, request)
        except UnknownCommand:
            return self._unknown(cmd, commands)
        except Exception as exc:
            log.warning("zmq control: command %r failed: %r", cmd, exc)
            return self._error(f"command {cmd!r} failed: {type(exc).__name__}: {exc}")
        if reply is None:
            return self._unknown(cmd, commands)
        if not isinstance(reply, dict):
            return self._error(f"command {cmd!r}: handler returned {type(reply).__name__}, not an object")
        if "ok" not in reply:
            reply = {"ok": True, **reply}
        elif reply["ok"] is False:
            self.errors += 1  # the handler refused it: as much an error for the client as our own refusals
        return reply

    def _unknown(self, cmd: str, commands: Iterable[str] | None) -> dict[str, Any]:
        known = ", ".join(["ping", *(commands or [])]) if commands is not None else None
        hint = f"; known commands: {known}" if known else ""
        return self._error(f"unknown command {cmd!r}{hint}")


class ZmqOutput(Output):
    config: ZmqOutputConfig

    def __init__(self, config: ZmqOutputConfig, output_id: str):
        super().__init__(config, output_id)
        self.dropped = 0  # sends ZeroMQ refused with EAGAIN (per-subscriber HWM drops are invisible here)
        self.bound_endpoints: dict[str, str] = {}  # "pub" / "control" -> actual address (ports resolved)
        self._zmq: Any = None
        self._context: Any = None
        self._pub: Any = None
        self._lock = threading.Lock()  # ZeroMQ sockets are not thread-safe; pipeline and watchdog both send
        self._protocol = ControlProtocol()
        self._control_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._handoff_lock = threading.Lock()  # who terminates the context when a handler outlives close()
        self._control_done = False
        self._orphaned_context: Any = None
        self._rlog = RateLimitedLog(log)

    # -- counters of the control socket ------------------------------------------------------------------

    @property
    def control_requests(self) -> int:
        return self._protocol.requests

    @property
    def control_errors(self) -> int:
        return self._protocol.errors

    def set_control_handler(self, handler: ControlHandler | None, commands: Iterable[str] | None = None) -> None:
        """`handler(cmd, request)` returns the reply object (`ok: true` is added when missing), or None / raises
        UnknownCommand for a command it does not serve. It runs on the control thread. `commands`, when given,
        lists the commands it serves: others are refused without calling it, naming the known ones."""
        self._protocol.set_handler(handler, commands)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def open(self) -> None:
        zmq = self._zmq = lazy_import("zmq", INSTALL_HINT)
        self._context = zmq.Context(io_threads=1)  # our own, so close() can end it without touching others'
        try:
            self._pub = self._make_socket(zmq.PUB, self.config.endpoint, self.config.bind, "PUB")
            self.bound_endpoints["pub"] = self._last_endpoint(self._pub)
            if self.config.control_endpoint is not None:
                rep = self._make_socket(zmq.REP, self.config.control_endpoint, True, "control (REP)")
                self.bound_endpoints["control"] = self._last_endpoint(rep)
                self._stop.clear()
                self._control_done = False
                # the thread owns `rep` from here on; Thread.start() is the memory barrier ZeroMQ asks for
                self._control_thread = threading.Thread(target=self._serve_control, args=(rep,),
                                                        name=f"edgeinfer-zmq-{self.id}", daemon=True)
                self._control_thread.start()
        except BaseException:
            self._context.destroy(linger=0)
            self._context = self._pub = None
            raise
        log.info("output '%s': publishing on %s%s", self.id, self.bound_endpoints["pub"],
                 f", control on {self.bound_endpoints['control']}" if "control" in self.bound_endpoints else "")

    def _make_socket(self, kind: int, endpoint: str, bind: bool, what: str) -> Any:
        zmq = self._zmq
        sock = self._context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)  # unsent records are stale at shutdown: never hold close() for them
        # options before bind/connect: ZeroMQ applies them to the connections made afterwards
        if kind == zmq.PUB:
            sock.setsockopt(zmq.SNDHWM, self.config.sndhwm)
        else:
            sock.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_REQUEST_BYTES)
        try:
            if bind:
                sock.bind(endpoint)
            else:
                sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            verb = "bind" if bind else "connect"
            raise OutputError(f"output '{self.id}': cannot {verb} {what} socket to {endpoint}: {exc}") from exc
        return sock

    def _last_endpoint(self, sock: Any) -> str:
        value = sock.getsockopt(self._zmq.LAST_ENDPOINT)
        return value.decode() if isinstance(value, bytes) else str(value)

    def close(self) -> None:
        """Stops the control thread and closes both sockets without lingering; returns within 1 s."""
        self._stop.set()
        thread, self._control_thread = self._control_thread, None
        if thread is not None:
            thread.join(CLOSE_TIMEOUT_S)
        with self._lock:
            if self._pub is not None:
                self._pub.close(linger=0)
                self._pub = None
        context, self._context = self._context, None
        if context is None:
            return
        with self._handoff_lock:
            if thread is not None and not self._control_done:
                # A handler is stuck and the thread still owns its socket; terminating the context now would
                # block until the handler returns, so the thread terminates it when it ends.
                log.warning("output '%s': control handler still running at close; not waiting for it", self.id)
                self._orphaned_context = context
                return
        context.term()

    # -- publishing --------------------------------------------------------------------------------------

    def publish(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind in ("detections", "classifications", "dense"):  # every result kind, per source
            topic = f"{kind}/{record.get('source')}"
        else:
            topic = kind if isinstance(kind, str) and kind else "unknown"
        self._send(topic, record)

    def heartbeat(self, record: dict[str, Any]) -> None:
        # the supervisor's body may not carry `type`; the topic must still say what it is
        if self.config.heartbeat:
            self._send("heartbeat", record)

    def _send(self, topic: str, record: dict[str, Any]) -> None:
        payload = json.dumps(record, separators=(",", ":")).encode()  # outside the lock: it is the slow part
        frames = (topic.encode(), payload)
        zmq = self._zmq
        with self._lock:
            if self._pub is None:
                return
            try:
                self._pub.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:
                self.dropped += 1
                return
            except zmq.ZMQError as exc:
                raise OutputError(f"output '{self.id}': send on {self.bound_endpoints.get('pub')} failed: "
                                  f"{exc}") from exc
            self.published += 1

    # -- control thread ----------------------------------------------------------------------------------

    def _serve_control(self, rep: Any) -> None:
        zmq = self._zmq
        try:
            while not self._stop.is_set():
                try:
                    if not rep.poll(CONTROL_POLL_MS, zmq.POLLIN):
                        continue
                    frames = rep.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                except zmq.ContextTerminated:
                    return
                reply = self._protocol.handle(frames)
                try:
                    # REP must answer before it may receive again, so every request gets a reply, errors included
                    rep.send(reply, zmq.NOBLOCK)
                except zmq.ZMQError as exc:
                    self._protocol.errors += 1
                    self._rlog.warning(f"ctl:{self.id}", "output '%s': control reply not sent: %s", self.id, exc)
        except Exception:
            log.exception("output '%s': control thread failed; control socket closed", self.id)
        finally:
            rep.close(linger=0)
            with self._handoff_lock:
                self._control_done = True
                context, self._orphaned_context = self._orphaned_context, None
            if context is not None:
                context.term()
