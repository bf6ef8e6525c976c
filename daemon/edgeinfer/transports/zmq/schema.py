"""The config models of the ZeroMQ source and output (no pyzmq needed to validate them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ...outputs.schema import OutputConfigBase
from ...sources.schema import SourceConfigBase
from . import wire
from .security import CurveConfig, check_connectable, check_endpoint


class ZmqSourceConfig(SourceConfigBase):
    type: Literal["zmq"] = "zmq"
    endpoint: str = Field(description="tcp://HOST:PORT or ipc:///path")
    pattern: Literal["sub", "pull", "rep"] = Field(
        "pull", description="sub: a robot's PUB; pull: a robot's PUSH; rep: imagezmq's REQ senders")
    bind: bool | None = Field(None, description="default: sub connects, pull and rep bind")
    protocol: Literal["edgeinfer", "imagezmq"] = Field(
        "edgeinfer", description="edgeinfer: wire format v1 (docs/zmq.md); imagezmq: send_image / send_jpg")
    rcvhwm: int = Field(2, ge=1, le=1000, description="messages ZeroMQ queues for the source (raw frames are all "
                        "handed over and the model keeps the newest, so a queue adds no age; docs/zmq.md)")
    reuse_buffers: bool = Field(True, description="keep large receive buffers in malloc's heap (glibc, process-wide) "
                                "instead of an mmap + munmap per frame (docs/zmq.md)")
    max_bytes: int = Field(wire.DEFAULT_MAX_BYTES, ge=1024, le=1 << 30,
                           description="larger payloads are dropped and counted as too_large")
    max_pixels: int = Field(wire.DEFAULT_MAX_PIXELS, ge=1, le=1 << 31,
                            description="a PNG/JPEG declaring more pixels is dropped (too_large) before decoding")
    curve: CurveConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ZmqSourceConfig:
        check_endpoint(self.endpoint, "endpoint")
        check_connectable(self.endpoint, self.binds)
        if self.pattern == "rep" and self.protocol != "imagezmq":
            raise ValueError("pattern 'rep' answers imagezmq's REQ senders: set protocol: imagezmq "
                             "(edgeinfer senders use pull or sub, which never make the sender wait)")
        return self

    @property
    def binds(self) -> bool:
        return self.bind if self.bind is not None else self.pattern != "sub"


class ZmqOutputCurveConfig(CurveConfig):
    reset_clients: Path | None = Field(
        None, description="folder of public keys allowed to `reset`; default: every client in `clients`")


class ZmqOutputConfig(OutputConfigBase):
    type: Literal["zmq"] = "zmq"
    endpoint: str = Field(default="tcp://*:5560", description="PUB socket address")
    bind: bool = Field(default=True, description="bind the PUB socket (false: connect to a broker or peer)")
    control_endpoint: str | None = Field(default="tcp://127.0.0.1:5561",
                                         description="REP socket for commands, always bound; null: no control")
    sndhwm: int = Field(default=100, ge=1, le=1_000_000,
                        description="messages queued per subscriber before ZeroMQ drops for that subscriber")
    curve: ZmqOutputCurveConfig | None = Field(
        None, description="CURVE on both sockets: only clients whose public key is in curve.clients connect")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_form(cls, value: str) -> str:
        return check_endpoint(value, "endpoint")

    @field_validator("control_endpoint")
    @classmethod
    def _control_endpoint_form(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint(value, "control_endpoint")

    @model_validator(mode="after")
    def _consistent(self) -> ZmqOutputConfig:
        check_connectable(self.endpoint, self.bind)
        # two `:*` endpoints are two different free ports, so only fixed addresses can clash
        if self.bind and self.endpoint == self.control_endpoint and not self.endpoint.endswith(":*"):
            raise ValueError(f"endpoint and control_endpoint are both {self.endpoint!r}; give them different "
                             f"addresses")
        return self
