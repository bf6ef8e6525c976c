"""A client for robots talking to edgeinfer over ZeroMQ: send frames, read detections and heartbeats, send
commands. Needs pyzmq (`pip install pyzmq`); the wire formats are in docs/zmq.md.

    from edgeinfer.client import FrameSender, ResultReader, Control

    with FrameSender("tcp://127.0.0.1:5555") as sender, ResultReader("tcp://127.0.0.1:5560") as reader:
        sender.send(image)                  # BGR uint8 H x W x 3
        topic, record = reader.recv(1.0)    # ("detections/cam0", {...}) or None after 1 s

With CURVE on, give each a `ClientKeys(server_public_key=..., client_secret_key=...)`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...lazy import lazy_import
from .security import INSTALL_HINT, load_key_pair, load_public_key
from .wire import (
    COMPRESSED,
    MAX_SEQ,
    V2_HAS_SEQ,
    V2_HAS_STAMP,
    V2_HEADER,
    V2_MAGIC,
    encode_header,
    encode_header_v2,
    header_for_image,
)

_UINT8 = np.dtype(np.uint8)


def _zmq() -> Any:
    return lazy_import("zmq", INSTALL_HINT)


@dataclass(frozen=True)
class ClientKeys:
    """CURVE for a client: the daemon's public key file and this client's key pair file (NAME.key_secret)."""

    server_public_key: Path | str
    client_secret_key: Path | str

    def apply(self, sock: Any) -> None:
        public, secret = load_key_pair(Path(self.client_secret_key))
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = load_public_key(Path(self.server_public_key))


class _Client:
    def __init__(self, kind: int, endpoint: str, bind: bool, keys: ClientKeys | None, context: Any,
                 options: dict[int, Any]):
        zmq = _zmq()
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.socket = self.context.socket(kind)
        self.socket.setsockopt(zmq.LINGER, 0)
        for option, value in options.items():
            self.socket.setsockopt(option, value)
        if keys is not None:
            keys.apply(self.socket)  # before bind/connect: CURVE applies to connections made afterwards
        self.endpoint = endpoint
        if bind:
            self.socket.bind(endpoint)
            value = self.socket.getsockopt(zmq.LAST_ENDPOINT)
            self.endpoint = value.decode() if isinstance(value, bytes) else str(value)
        else:
            self.socket.connect(endpoint)

    def close(self) -> None:
        self.socket.close(linger=0)
        if self._own_context:
            self.context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameSender(_Client):
    """Sends frames in wire format v2 (binary header; `wire=1` sends the JSON header of v1, which daemons before
    v2 need: `Control.ping()` lists the versions a daemon takes). `pattern`: "push" (the daemon's source is
    `pull`) or "pub" (its source is `sub`; a PUB binds by default). A send never blocks: when `sndhwm` frames are
    already queued (the daemon is away or slow) the frame is dropped and `send` returns False; for a robot a
    fresh frame later beats an old one now. `block=True` waits for room instead (a recorder that must not lose
    frames; a benchmark). Sequence numbers count up from 0 unless given; the stamp defaults to now (wall
    clock)."""

    def __init__(self, endpoint: str, *, pattern: str = "push", bind: bool | None = None, source: str | None = None,
                 frame_id: str | None = None, keys: ClientKeys | None = None, sndhwm: int = 2, block: bool = False,
                 wire: int = 2, context: Any = None):
        zmq = _zmq()
        kinds = {"push": zmq.PUSH, "pub": zmq.PUB}
        if pattern not in kinds:
            raise ValueError(f"pattern must be one of {', '.join(kinds)}, got {pattern!r}")
        if wire not in (1, 2):
            raise ValueError(f"wire must be 1 or 2, got {wire!r}")
        self.wire = wire
        super().__init__(kinds[pattern], endpoint, pattern == "pub" if bind is None else bind, keys, context,
                         {zmq.SNDHWM: sndhwm})
        self._zmq_mod = zmq
        self._flags = 0 if block else zmq.NOBLOCK
        self._more = self._flags | zmq.SNDMORE
        self.source, self.frame_id = source, frame_id
        # v2's text fields never change for this sender: packed once (encode_header_v2 says if they are too long),
        # their two lengths read back from the header it made
        texts = encode_header_v2("bgr8", frame_id=frame_id, source=source) if wire == 2 else bytes(V2_HEADER.size)
        self._texts, self._text_lengths = texts[V2_HEADER.size:], (texts[10], texts[11])
        self.seq = 0
        self.sent = 0
        self.dropped = 0

    def send(self, image: np.ndarray, *, encoding: str = "bgr8", seq: int | None = None,
             stamp: float | None = None, frame_id: str | None = None) -> bool:
        """A raw image (bgr8/rgb8: H x W x 3, mono8: H x W, uint8). The array is sent without a copy: do not
        write into it afterwards (ZeroMQ may still be sending it)."""
        image = np.ascontiguousarray(image)
        if seq is None:
            seq = self.seq
        self.seq = seq + 1
        if stamp is None:
            stamp = time.time()
        shape = image.shape
        if (self.wire == 2 and encoding == "bgr8" and frame_id is None and image.dtype is _UINT8
                and len(shape) == 3 and shape[2] == 3 and 0 <= seq <= MAX_SEQ and shape[0] <= 65_535
                and shape[1] <= 65_535):
            # the usual frame, packed in one step: this runs in the robot's capture thread right after the
            # capture, with cold caches (docs/zmq.md, wire format v2), and its time is part of the frame's age
            header = V2_HEADER.pack(V2_MAGIC, 0, V2_HAS_SEQ | V2_HAS_STAMP, shape[1], shape[0], *self._text_lengths,
                                    shape[1] * 3, seq, stamp) + self._texts
        else:
            header = header_for_image(image, encoding, self.wire, seq=seq, stamp=stamp, source=self.source,
                                      frame_id=frame_id or self.frame_id)
        return self._send(header, image)

    def send_encoded(self, data: bytes, encoding: str = "jpeg", *, width: int = 0, height: int = 0,
                     seq: int | None = None, stamp: float | None = None, frame_id: str | None = None) -> bool:
        """A whole JPEG or PNG file's bytes (width/height optional; when given the daemon checks them)."""
        if encoding not in COMPRESSED:
            raise ValueError(f"encoding must be one of {', '.join(COMPRESSED)} here; use send() for raw images")
        encode = encode_header_v2 if self.wire == 2 else encode_header
        return self._send(encode(encoding, width, height, **self._fields(seq, stamp, frame_id)), data)

    def _fields(self, seq: int | None, stamp: float | None, frame_id: str | None) -> dict[str, Any]:
        if seq is None:
            seq = self.seq
        self.seq = seq + 1
        return {"seq": seq, "stamp": time.time() if stamp is None else stamp, "source": self.source,
                "frame_id": frame_id or self.frame_id}

    def _send(self, header: bytes, payload: Any) -> bool:
        try:
            # two sends rather than send_multipart (less Python between the stamp and the wire); ZeroMQ checks
            # the queue's room at the first part only, so a frame goes whole or not at all
            self.socket.send(header, self._more)
            self.socket.send(payload, self._flags, copy=False)
        except self._zmq_mod.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True


class ResultReader(_Client):
    """Subscribes to the daemon's records: `topics` are prefixes (`detections/`, `detections/cam0`,
    `heartbeat`; "" for everything). `recv` returns (topic, record) or None after `timeout` s."""

    def __init__(self, endpoint: str, *, topics: tuple[str, ...] = ("detections/", "heartbeat"),
                 keys: ClientKeys | None = None, bind: bool = False, context: Any = None):
        zmq = _zmq()
        super().__init__(zmq.SUB, endpoint, bind, keys, context, {})
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._zmq_mod = zmq

    def recv(self, timeout: float | None = None) -> tuple[str, dict[str, Any]] | None:
        zmq = self._zmq_mod
        if not self.socket.poll(None if timeout is None else int(timeout * 1000), zmq.POLLIN):
            return None
        topic, body = self.socket.recv_multipart()[:2]
        return topic.decode(), json.loads(body)


class Control:
    """Commands to the daemon's control socket (REQ). Each call waits at most `timeout` s and then raises
    TimeoutError; the REQ socket is replaced after a timeout (REQ cannot send again before it has received)."""

    def __init__(self, endpoint: str, *, keys: ClientKeys | None = None, timeout: float = 2.0, context: Any = None):
        self.endpoint, self.keys, self.timeout = endpoint, keys, timeout
        self._context = context
        self._client: _Client | None = None

    def _socket(self) -> Any:
        if self._client is None:
            zmq = _zmq()
            self._client = _Client(zmq.REQ, self.endpoint, False, self.keys, self._context, {})
        return self._client.socket

    def command(self, cmd: str, **fields: Any) -> dict[str, Any]:
        zmq = _zmq()
        sock = self._socket()
        sock.send(json.dumps({"cmd": cmd, **fields}).encode())
        if not sock.poll(int(self.timeout * 1000), zmq.POLLIN):
            self.close()
            raise TimeoutError(f"no reply to {cmd!r} from {self.endpoint} within {self.timeout} s")
        return json.loads(sock.recv())

    def ping(self) -> dict[str, Any]:
        return self.command("ping")

    def status(self) -> dict[str, Any]:
        return self.command("status")

    def reset(self) -> dict[str, Any]:
        return self.command("reset")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> Control:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ClientKeys", "Control", "FrameSender", "ResultReader"]
