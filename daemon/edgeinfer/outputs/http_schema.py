"""Config of the `http` output (status page, live view, /metrics): no code, so `import edgeinfer.config`
loads no web library."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .schema import OutputConfigBase

DEFAULT_PORT = 8321


class HttpOutputConfig(OutputConfigBase):
    type: Literal["http"] = "http"
    host: str = Field("127.0.0.1", description="address to listen on; 127.0.0.1 keeps the page on this box, "
                      "0.0.0.0 opens it to the network (set a token then)")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="TCP port; 0 picks a free one (logged)")
    token: str | None = Field(None, min_length=8, description="access token: every request must carry it "
                              "(Authorization: Bearer TOKEN, or ?token=TOKEN); better: token_file")
    token_file: Path | None = Field(None, description="a file holding the access token (first line)")
    view_fps: float = Field(10.0, gt=0, le=120, description="most live-view frames encoded per second and "
                            "view, only while a viewer is connected")
    jpeg_quality: int = Field(75, ge=10, le=100)
    view_max_width: int = Field(960, ge=64, le=8192, description="live-view frames wider than this are scaled "
                                "down before encoding")
    metrics: bool = Field(True, description="serve Prometheus /metrics")

    @model_validator(mode="after")
    def _one_token(self) -> HttpOutputConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token or token_file, not both")
        return self
