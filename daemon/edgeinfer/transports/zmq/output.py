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
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ...lazy import MissingDependency, lazy_import
from ...logutil import RateLimitedLog
from ...outputs.base import OutputError, RecordOutput
from .schema import ZmqOutputConfig, ZmqOutputCurveConfig
from .security import CurveServer, curve_problems, key_folder_mode_problems, load_public_key
from .wire import WIRE_VERSIONS

if TYPE_CHECKING:
    from ...runtime import RuntimeContext

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install pyzmq (or '.[zmq]' from the edgeinfer checkout)"
MAX_REQUEST_BYTES = 64 * 1024
# Beyond this ZeroMQ drops the peer's connection without a reply; it only keeps a rogue client from making the
# daemon buffer a huge message. Between MAX_REQUEST_BYTES and this, the client gets an error reply.
HARD_MAX_REQUEST_BYTES = 1024 * 1024
CONTROL_POLL_MS = 100  # how often the control thread looks at its stop flag: bounds close() latency
CLOSE_TIMEOUT_S = 0.8  # leaves close() within 1 s even when a handler hangs

ControlHandler = Callable[[str, dict], "dict | None"]

PRIVILEGED_COMMANDS = ("reset",)  # with CURVE on, only keys in curve.reset_clients (or every client) may send




def _reset_clients_not_in_clients(curve: ZmqOutputCurveConfig) -> list[str]:
    """A key in reset_clients but not in clients can never connect (CURVE refuses it before any command)."""
    try:
        clients = {load_public_key(p) for p in curve.clients.iterdir() if p.suffix == ".key"}
        missing = [p.name for p in sorted(curve.reset_clients.iterdir())  # type: ignore[union-attr]
                   if p.suffix == ".key" and load_public_key(p) not in clients]
    except (OSError, ValueError, MissingDependency) as exc:
        return [f"curve: cannot read the client keys: {exc}"]
    if not missing:
        return []
    return [f"curve: reset_clients key(s) {', '.join(missing)} are not in curve.clients ({curve.clients}): such "
            f"a client cannot connect at all; copy the key(s) into the clients folder too"]




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
        self.refused = 0  # privileged commands from a peer not allowed to send them
        # z85 public keys allowed to send PRIVILEGED_COMMANDS; None: whoever reached the socket may
        self.privileged_keys: frozenset[str] | None = None

    def set_handler(self, handler: ControlHandler | None, commands: Iterable[str] | None = None) -> None:
        # one tuple assignment, so the serving thread never sees a handler with the wrong command list
        self._handler, self._commands = handler, (tuple(commands) if commands is not None else None)

    def handle(self, frames: list[bytes], peer: str | None = None) -> bytes:
        """`peer`: the client's CURVE public key (z85) when CURVE is on, else None."""
        self.requests += 1
        try:
            reply = self._reply(frames, peer)
        except Exception as exc:  # the REP loop must always answer, whatever went wrong in here
            reply = self._error(f"internal error: {type(exc).__name__}: {exc}")
        try:
            return json.dumps(reply, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            return json.dumps(self._error(f"reply is not JSON-serializable: {exc}")).encode()

    def _error(self, message: str) -> dict[str, Any]:
        self.errors += 1
        return {"ok": False, "error": message}

    def _reply(self, frames: list[bytes], peer: str | None) -> dict[str, Any]:
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
            # the frame wire formats the daemon's zmq sources take: a sender picks the newest both know
            return {"ok": True, "reply": "pong", "frame_wire_versions": list(WIRE_VERSIONS)}
        handler, commands = self._handler, self._commands
        allowed = self.privileged_keys
        if cmd in PRIVILEGED_COMMANDS and allowed is not None and peer not in allowed:
            self.refused += 1
            return self._error(f"command {cmd!r} needs an authorised client: this client's key is not in "
                               f"curve.reset_clients")
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


class ZmqOutput(RecordOutput):
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
        self._curve: CurveServer | None = None
        self._denied_before = 0

    # -- counters of the control socket ------------------------------------------------------------------

    @property
    def control_requests(self) -> int:
        return self._protocol.requests

    @property
    def control_errors(self) -> int:
        return self._protocol.errors

    @property
    def unauthenticated(self) -> int | None:
        """Peers refused by CURVE (unknown client key) since start; None when CURVE is off."""
        if self.config.curve is None:
            return None
        curve = self._curve
        return self._denied_before + (curve.denied if curve is not None else 0)

    def counters(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "control_requests": self.control_requests,
                "control_errors": self.control_errors, "refused_commands": self._protocol.refused,
                "unauthenticated": self.unauthenticated}

    def set_control_handler(self, handler: ControlHandler | None, commands: Iterable[str] | None = None) -> None:
        """`handler(cmd, request)` returns the reply object (`ok: true` is added when missing), or None / raises
        UnknownCommand for a command it does not serve. It runs on the control thread. `commands`, when given,
        lists the commands it serves: others are refused without calling it, naming the known ones."""
        self._protocol.set_handler(handler, commands)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def open(self, ctx: RuntimeContext) -> None:
        # the daemon's commands (reset, status) answer on the control socket
        self.set_control_handler(lambda cmd, request: ctx.commands.handle(cmd, request), ctx.commands.names)
        zmq = self._zmq = lazy_import("zmq", INSTALL_HINT)
        self._context = zmq.Context(io_threads=1)  # our own, so close() can end it without touching others'
        try:
            if self.config.curve is not None:
                self._curve = self._start_curve(self.config.curve)
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
            if self._curve is not None:
                self._curve.watch()
        except BaseException:
            self._stop_curve()
            self._context.destroy(linger=0)
            self._context = self._pub = None
            raise
        log.info("output '%s': publishing on %s%s", self.id, self.bound_endpoints["pub"],
                 f", control on {self.bound_endpoints['control']}" if "control" in self.bound_endpoints else "")

    @classmethod
    def preflight_config(cls, config: ZmqOutputConfig) -> list[str]:  # type: ignore[override]
        curve = config.curve
        problems = curve_problems(curve)
        if curve is not None and curve.reset_clients is not None and not curve.reset_clients.is_dir():
            problems.append(f"curve: reset_clients folder not found: {curve.reset_clients}")
        elif curve is not None and curve.reset_clients is not None and not problems:
            problems += key_folder_mode_problems(curve.reset_clients, "curve: reset_clients")
            problems += _reset_clients_not_in_clients(curve)
        return problems

    def _start_curve(self, curve: ZmqOutputCurveConfig) -> CurveServer:
        problems = self.preflight_config(self.config)
        if problems:
            raise OutputError(f"output '{self.id}': " + "; ".join(problems))
        try:
            server = CurveServer(self._context, curve, f"output '{self.id}'")
        except (OSError, ValueError) as exc:
            raise OutputError(f"output '{self.id}': curve: {exc}") from exc
        keys = curve.reset_clients or curve.clients
        zmq_auth = lazy_import("zmq.auth", INSTALL_HINT)
        self._protocol.privileged_keys = frozenset(
            k.decode() if isinstance(k, bytes) else str(k) for k in zmq_auth.load_certificates(str(keys)))
        return server

    def _stop_curve(self) -> None:
        curve, self._curve = self._curve, None
        if curve is not None:
            curve.stop()
            self._denied_before += curve.denied

    def _make_socket(self, kind: int, endpoint: str, bind: bool, what: str) -> Any:
        zmq = self._zmq
        sock = self._context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)  # unsent records are stale at shutdown: never hold close() for them
        if self._curve is not None:
            self._curve.secure(sock)
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
        self._stop_curve()  # its sockets must close before the context can end
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

    def write_record(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        kind = kind if isinstance(kind, str) and kind else "unknown"
        # a result (a record of one frame of one source) goes on its kind's topic per source, so a subscriber
        # can filter by prefix: "detections/cam0", "classifications/", ...
        topic = f"{kind}/{record['source']}" if "frame" in record and "source" in record else kind
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

    def _peer_key(self, part: Any) -> str | None:
        """The CURVE public key (z85) the ZAP handler admitted this client with; None without CURVE."""
        if self.config.curve is None:
            return None
        try:
            return part.get("User-Id")
        except Exception:  # no ZAP metadata on this message: treat as no key
            return None

    def _serve_control(self, rep: Any) -> None:
        zmq = self._zmq
        try:
            while not self._stop.is_set():
                try:
                    if not rep.poll(CONTROL_POLL_MS, zmq.POLLIN):
                        continue
                    parts = rep.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    continue
                except zmq.ContextTerminated:
                    return
                reply = self._protocol.handle([p.bytes for p in parts], self._peer_key(parts[0]))
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
