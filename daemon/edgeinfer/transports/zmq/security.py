"""What edgeinfer's ZeroMQ plugins share: endpoint checks and CURVE authentication (pyzmq's `zmq.auth`).

Every edgeinfer socket is the CURVE *server* (whether it binds or connects): it holds the daemon's key pair and
a ZAP handler (pyzmq's ThreadAuthenticator, one per context) admits only clients whose public key file lies in
the allow-list folder. A refused client gets nothing (ZeroMQ closes the connection after the handshake) and is
counted. pyzmq is imported only inside the functions, so the config models load on a box without it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from pydantic import Field

from ...lazy import lazy_import
from ...logutil import RateLimitedLog
from ...schema import StrictModel

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install pyzmq (or '.[zmq]' from the edgeinfer checkout)"

_TCP_ENDPOINT = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/\[\]]+):(?P<port>\d+|\*)$")


def check_endpoint(value: str, key: str) -> str:
    """A ZeroMQ address edgeinfer accepts (tcp, ipc, inproc), or ValueError naming `key` and the forms."""
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


def check_connectable(endpoint: str, bind: bool, key: str = "endpoint") -> None:
    if bind:
        return
    if endpoint.startswith("tcp://*:"):
        raise ValueError(f"{key} {endpoint!r}: with bind: false the socket connects, so it needs a host "
                         f"(e.g. tcp://192.168.1.10:5560), not '*'")
    if endpoint.endswith(":*"):
        raise ValueError(f"{key} {endpoint!r}: with bind: false the socket connects, so it needs a port, not '*'")


class CurveConfig(StrictModel):
    """CURVE on a socket: the daemon's key pair and the folder of client public keys it admits."""

    secret_key: Path = Field(description="this daemon's key pair file (NAME.key_secret from `edgeinfer keys`)")
    clients: Path = Field(description="folder of allowed clients' public key files (*.key)")


def curve_problems(curve: CurveConfig | None, field: str = "curve") -> list[str]:
    """File checks for `edgeinfer check` and start-up: each "<field>: <problem>"."""
    if curve is None:
        return []
    problems = []
    if not curve.secret_key.is_file():
        problems.append(f"{field}: secret_key file not found: {curve.secret_key}")
    elif not curve.secret_key.name.endswith(".key_secret"):
        problems.append(f"{field}: secret_key {curve.secret_key} should be a NAME.key_secret file (the key pair "
                        f"written by `edgeinfer keys`), not a public .key file")
    else:
        problems += secret_key_mode_problems(curve.secret_key, field)
    if not curve.clients.is_dir():
        problems.append(f"{field}: clients folder not found: {curve.clients}")
    elif not any(p.suffix == ".key" for p in curve.clients.iterdir()):
        problems.append(f"{field}: clients folder {curve.clients} holds no public key (*.key): nobody could "
                        f"connect")
    else:
        problems += key_folder_mode_problems(curve.clients, f"{field}: clients")
    return problems


def secret_key_mode_problems(path: Path, field: str = "curve") -> list[str]:
    """A secret key that others may read is refused, as OpenSSH refuses such a private key: anyone on the box
    could impersonate the daemon."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return [f"{field}: secret_key {path} is accessible by others (mode {mode:04o}); it must be readable by "
                f"its owner only: chmod 600 {path}"]
    return []


def key_folder_mode_problems(folder: Path, what: str) -> list[str]:
    """A folder of authorised keys that others may write is refused: anyone on the box could authorise
    their own key (OpenSSH's StrictModes does the same for authorized_keys)."""
    problems = []
    for path in (folder, *sorted(p for p in folder.iterdir() if p.suffix == ".key")):
        mode = path.stat().st_mode & 0o777
        if mode & 0o022:
            problems.append(f"{what} {'folder' if path == folder else 'key'} {path} is writable by others (mode "
                            f"{mode:04o}): anyone could authorise a key; chmod go-w {path}")
    return problems


def load_key_pair(path: Path) -> tuple[bytes, bytes]:
    zmq_auth = lazy_import("zmq.auth", INSTALL_HINT)
    public, secret = zmq_auth.load_certificate(str(path))
    if not secret:
        raise ValueError(f"{path} holds no secret key (give the NAME.key_secret file)")
    return public, secret


def load_public_key(path: Path) -> bytes:
    zmq_auth = lazy_import("zmq.auth", INSTALL_HINT)
    public, _ = zmq_auth.load_certificate(str(path))
    return public


MONITOR_POLL_MS = 100


class CurveServer:
    """The ZAP handler of one context plus the daemon's keys; `secure(socket)` before bind/connect, then
    `watch()` once every socket is secured.

    `denied` counts peers refused: an unknown client key (told by the ZAP handler) or a handshake that failed
    before authentication (no CURVE, a wrong server key: told by a socket monitor). `admitted` counts the
    others.
    """

    def __init__(self, context: Any, curve: CurveConfig, owner: str):
        self.owner = owner
        self.curve = curve
        self._context = context
        self._public, self._secret = load_key_pair(curve.secret_key)
        self._auth = _make_authenticator(context, self)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(curve.clients))
        self.denied = 0
        self.admitted = 0
        self._lock = threading.Lock()
        self._rlog = RateLimitedLog(log, interval_s=10.0)
        self._monitors: list[str] = []
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def secure(self, sock: Any) -> None:
        zmq = lazy_import("zmq", INSTALL_HINT)
        sock.curve_secretkey = self._secret
        sock.curve_publickey = self._public
        sock.curve_server = True
        # handshakes that fail before ZAP is asked (a peer without CURVE, or with another server key)
        address = f"inproc://edgeinfer-monitor-{id(self)}-{len(self._monitors)}"
        sock.monitor(address, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self._monitors.append(address)

    def watch(self) -> None:
        """Start the thread that reads the socket monitors (they count failed handshakes)."""
        if self._watcher is None and self._monitors:
            self._watcher = threading.Thread(target=self._watch, args=(list(self._monitors),), daemon=True,
                                             name=f"curve-monitor:{self.owner}")
            self._watcher.start()

    def _watch(self, addresses: list[str]) -> None:
        zmq = lazy_import("zmq", INSTALL_HINT)
        from zmq.utils.monitor import recv_monitor_message

        pairs = []
        try:
            poller = zmq.Poller()
            for address in addresses:
                pair = self._context.socket(zmq.PAIR)
                pair.setsockopt(zmq.LINGER, 0)
                pair.connect(address)
                poller.register(pair, zmq.POLLIN)
                pairs.append(pair)
            while not self._stop.is_set():
                for pair, _ in poller.poll(MONITOR_POLL_MS):
                    event = recv_monitor_message(pair, zmq.NOBLOCK)
                    if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                        poller.unregister(pair)
                    else:
                        self._refused("", f"handshake failed (no CURVE, or another server key; error "
                                          f"{event['value']})")
        except zmq.ContextTerminated:
            pass
        except Exception:  # counting must never take the daemon down
            log.exception("%s: socket monitor failed; failed handshakes are no longer counted", self.owner)
        finally:
            for pair in pairs:
                pair.close(linger=0)

    def _refused(self, address: str, reason: str) -> None:
        with self._lock:
            self.denied += 1
            count = self.denied
        self._rlog.warning(f"denied:{self.owner}", "%s: refused an unauthenticated peer from %s (%s); %d so far",
                           self.owner, address or "?", reason, count)

    def stop(self) -> None:
        self._stop.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join(1.0)
        try:
            self._auth.stop()
        except Exception:  # stopping the ZAP thread must not hide why we are closing
            log.exception("%s: stopping the ZAP handler failed", self.owner)


def _make_authenticator(context: Any, server: CurveServer) -> Any:
    # defined here so that this module imports without pyzmq
    thread_mod = lazy_import("zmq.auth.thread", INSTALL_HINT)

    class CountingAuthenticator(thread_mod.ThreadAuthenticator):
        """pyzmq's ZAP handler, telling edgeinfer about every refused and admitted peer."""

        _address = ""

        async def handle_zap_message(self, msg: list[bytes]) -> None:
            self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
            await super().handle_zap_message(msg)

        def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                            user_id: str = "anonymous") -> None:
            if status_code == b"200":
                server.admitted += 1
            else:
                server._refused(self._address, status_text.decode("utf-8", "replace"))
            super()._send_zap_reply(request_id, status_code, status_text, user_id)

    return CountingAuthenticator(context, log=logging.getLogger("edgeinfer.zap"))


def make_key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """Writes NAME.key (public: hand it out) and NAME.key_secret (keep it; mode 0600) into `folder`."""
    zmq_auth = lazy_import("zmq.auth", INSTALL_HINT)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = (Path(p) for p in zmq_auth.create_certificates(str(folder), name))
    os.chmod(secret, 0o600)
    return public, secret
