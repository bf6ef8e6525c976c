"""The config models of the outputs (the `outputs[]` entries), without their code."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..schema import StrictModel


class OutputConfigBase(StrictModel):
    id: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$", description="default: the type")
    heartbeat: bool = Field(default=True, description="also publish the supervisor's heartbeat here")


class JsonlRotateConfig(StrictModel):
    max_bytes: int = Field(ge=4096, description="rotate before a record would take the file past this size")
    keep: int = Field(3, ge=1, le=100, description="rotated files kept: PATH.1 (newest) .. PATH.<keep>")


class JsonlOutputConfig(OutputConfigBase):
    type: Literal["jsonl"] = "jsonl"
    path: str = Field(default="-", description="'-' for stdout, else a file appended to")
    # Off unless asked for: at one per watchdog cycle they swamped the detections on stdout (918 heartbeat lines
    # for 250 detection lines in the demo) and filled a file at ~2.1 GB a day; the other channels (ZeroMQ, ROS,
    # systemd's STATUS=) carry them.
    heartbeat: bool = Field(default=False, description="also write the watchdog's heartbeats here")
    heartbeat_interval_s: float = Field(
        default=0, ge=0, le=86_400, description="with heartbeat: at most one per this many seconds, plus every "
        "change of state; 0 = every watchdog cycle")
    rotate: JsonlRotateConfig | None = Field(default=None, description="size-based rotation of a file output")

    @model_validator(mode="after")
    def _rotate_needs_a_file(self):
        if self.rotate is not None and self.path == "-":
            raise ValueError("rotate: needs a file path (path is '-', stdout)")
        return self
