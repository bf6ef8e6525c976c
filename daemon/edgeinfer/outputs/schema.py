"""The config models of the outputs (the `outputs[]` entries), without their code."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..schema import StrictModel


class OutputConfigBase(StrictModel):
    id: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$", description="default: the type")
    heartbeat: bool = Field(default=True, description="also publish the supervisor's heartbeat here")


class JsonlOutputConfig(OutputConfigBase):
    type: Literal["jsonl"] = "jsonl"
    path: str = Field(default="-", description="'-' for stdout, else a file appended to")
    # Off on stdout unless asked for: at one per watchdog cycle they swamped the detections (918 heartbeat
    # lines for 250 detection lines in the demo) and, under systemd, the journal (~1.9 GB a day).
    heartbeat: bool | None = Field(default=None, description="publish heartbeats here; default: files yes, "
                                   "stdout no")
