"""The `http` output: a status page with the live annotated view of each source, a JSON status endpoint (the
channel `edgeinfer status` and `edgeinfer tail` read), and Prometheus `/metrics`. Off unless configured;
bound to 127.0.0.1 unless `host` says otherwise; an optional access token guards every route.

Cost to the pipeline per result: a reference swap for the live view, a few counter/histogram updates for
/metrics, and a JSON rendering only while a `tail` client is connected. Drawing and JPEG encoding run on
the live view's own thread, only while a viewer is connected (web/live.py); the server runs on its own event
loop in its own thread (web/server.py). See docs/status-page.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..lazy import lazy_import
from ..web.live import LiveViews
from ..web.metrics import DaemonMetrics
from ..web.server import StatusServer
from .base import Output, OutputError
from .schema import HttpOutputConfig

if TYPE_CHECKING:
    from ..results import Result
    from ..runtime import RuntimeContext

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'edgeinfer[http]'"


def read_token(config: HttpOutputConfig) -> str | None:
    if config.token_file is None:
        return config.token
    try:
        token = Path(config.token_file).read_text().strip().splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise OutputError(f"token_file: cannot read a token from {config.token_file}: {exc}") from exc
    if len(token) < 8:
        raise OutputError(f"token_file: the token in {config.token_file} is shorter than 8 characters")
    return token


class HttpOutput(Output):
    config: HttpOutputConfig

    def __init__(self, config: HttpOutputConfig, output_id: str):
        super().__init__(config, output_id)
        self._ctx: RuntimeContext | None = None
        self._views: Any = None
        self._metrics: Any = None
        self._server: Any = None
        self._started = time.time()

    @classmethod
    def preflight_config(cls, config: HttpOutputConfig) -> list[str]:  # type: ignore[override]
        try:
            read_token(config)
        except OutputError as exc:
            return [str(exc)]
        return []

    @property
    def url(self) -> str | None:
        return None if self._server is None else self._server.url

    # -- lifecycle ---------------------------------------------------------------------------------------
    def open(self, ctx: RuntimeContext) -> None:
        lazy_import("aiohttp", INSTALL_HINT)
        if self.config.metrics:
            lazy_import("prometheus_client", INSTALL_HINT)
        self._ctx = ctx
        token = read_token(self.config)
        self._views = LiveViews(self.config.view_fps, self.config.jpeg_quality, self.config.view_max_width)
        for info in ctx.catalogue.values():  # every view listed from the start, before its first frame
            for source in info.sources:
                self._views.declare(info.id, source)
        if self.config.metrics:
            self._metrics = DaemonMetrics(self._ctx.stats, self._ctx.status, self._own_metrics)
        self._server = StatusServer(self.config.host, self.config.port, token, self._views, self.status_body,
                                    self._metrics.render if self._metrics is not None else None, self._command)
        self._views.on_encoded = self._server.frame_encoded
        try:
            self._server.start()
        except OSError as exc:
            raise OutputError(f"output '{self.id}': cannot listen on {self.config.host}:{self.config.port}: "
                              f"{exc.strerror or exc}") from exc
        except Exception as exc:
            raise OutputError(f"output '{self.id}': http server failed to start: {exc}") from exc
        self._views.start()
        guarded = " (access token required)" if token else ""
        log.info("output '%s': status page on %s%s", self.id, self._server.url, guarded)
        if token is None and self.config.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("output '%s': listening on %s without an access token: anyone who reaches this address "
                        "sees the cameras and may reset the watchdog; set token_file", self.id, self.config.host)

    def close(self) -> None:
        if self._views is not None:
            self._views.close()
        if self._server is not None:
            self._server.stop()

    # -- results and heartbeats --------------------------------------------------------------------------
    def publish(self, result: Result) -> None:
        """The publish thread: store a reference, count, observe; nothing here draws or encodes."""
        if self._views is not None:
            self._views.offer(result)
        if self._metrics is not None:  # also the SAFE_STOP markers (no frame): every record the outputs got
            self._metrics.observe(result.model, result.source, result.status, result.infer_ms, result.age_ms)
        server = self._server
        if server is not None and server.has_tail_clients:
            server.push_record(result.to_record(), result.model, result.source)
        self.published += 1

    def heartbeat(self, record: dict[str, Any]) -> None:
        server = self._server
        if server is not None and server.has_tail_clients:
            server.push_record(record, None, None)

    def counters(self) -> dict[str, Any]:
        views = self._views.totals() if self._views is not None else {}
        server = self._server
        return {"viewers": views.get("viewers", 0), "view_encoded": views.get("encoded", 0),
                "view_dropped": views.get("dropped", 0),
                "requests": server.requests if server else 0, "unauthorized": server.unauthorized if server else 0,
                "tail_dropped": server.tail_dropped if server else 0,
                # CPU seconds of the live view's encoder and of the server's thread (what looking costs)
                "cpu_s": round(views.get("encode_cpu_s", 0.0) + (server.cpu_s if server else 0.0), 3)}

    # -- what the server serves ------------------------------------------------------------------------------
    def _command(self, cmd: str, request: dict[str, Any]) -> dict[str, Any]:
        """POST /api/command: the daemon's commands (reset, status), as on every control channel."""
        if cmd == "ping":
            return {"ok": True, "reply": "pong"}
        reply = self._ctx.commands.handle(cmd, request)
        return reply if "ok" in reply else {"ok": True, **reply}

    def _own_metrics(self) -> dict[str, tuple[str, str, float]]:
        views = self._views.totals() if self._views is not None else {}
        server = self._server
        return {
            "edgeinfer_http_view_frames_encoded": ("counter", "Live-view frames encoded", views.get("encoded", 0)),
            "edgeinfer_http_view_frames_dropped": ("counter", "Live-view results dropped while the encoder "
                                                   "was busy", views.get("dropped", 0)),
            "edgeinfer_http_view_frames_skipped": ("counter", "Live-view results passed over by the view_fps "
                                                   "cap", views.get("skipped", 0)),
            "edgeinfer_http_viewers": ("gauge", "Connected live-view viewers", views.get("viewers", 0)),
            "edgeinfer_http_cpu_seconds": ("counter", "CPU time of the live-view encoder and the http server "
                                           "threads", self.counters()["cpu_s"]),
            "edgeinfer_http_unauthorized": ("counter", "Requests refused for a missing or wrong token",
                                            server.unauthorized if server else 0),
        }

    def status_body(self) -> dict[str, Any]:
        """GET /api/status: the latest heartbeat, the pipeline counters and what each model serves with."""
        ctx = self._ctx
        heartbeat = ctx.status()
        stats = ctx.stats() or {}
        models: dict[str, dict[str, Any]] = {
            info.id: {"backend": info.backend or None, "device": info.device or None, "kind": info.kind,
                      "labels": len(info.labels), "sources": list(info.sources)}
            for info in list(ctx.catalogue.values())}
        for mid, entry in ((heartbeat or {}).get("serving") or {}).items():
            models.setdefault(mid, {})["serving"] = entry  # which link of its fallback chain serves
        for mid, m in (stats.get("models") or {}).items():
            if "backend" in m:  # a remote backend's own state (which link serves, fallback)
                models.setdefault(mid, {})["link"] = m["backend"]
        views = self._views.views() if self._views is not None else []
        for view in views:
            view["stream"] = f"stream/{view['model']}/{view['source']}"
            view["snapshot"] = f"snapshot/{view['model']}/{view['source']}"
        return {
            "ok": True,
            "state": (heartbeat or {}).get("state", "STARTING"),
            "uptime_s": round(time.time() - self._started, 1),
            "heartbeat": heartbeat,
            "stats": stats,
            "models": models,
            "views": views,
            "http": self.counters(),
        }
