"""The status page's HTTP server: aiohttp on its own event loop in its own thread.

Why aiohttp: one well-kept asyncio package (aio-libs, regular releases) gives the server, streaming responses
(MJPEG, NDJSON), WebSockets and an HTTP client; its AppRunner runs on a loop we own in a background thread and
installs no signal handlers, so it never competes with the daemon's SIGTERM/SIGHUP handling (uvicorn expects
to own the main thread's signals, and needs a framework such as Starlette on top).

Routes (all behind the access token when one is set: `Authorization: Bearer TOKEN` or `?token=TOKEN`):
  GET  /                          the status page (static HTML/JS from the package, no build step)
  GET  /api/status                the latest heartbeat, pipeline counters, models and live views (JSON)
  GET  /api/records               live records as NDJSON (`?heartbeats=1`, `?model=`, `?source=`)
  POST /api/command               {"cmd": "reset"|"status"}: the daemon's control commands
  GET  /stream/{model}/{source}   the live annotated view as MJPEG (multipart/x-mixed-replace)
  GET  /snapshot/{model}/{source} the newest annotated frame as one JPEG
  GET  /metrics                   Prometheus text format
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from ..handoff import lower_thread_priority
from .live import LiveViews, ViewKey

log = logging.getLogger(__name__)

BOUNDARY = "edgeinferframe"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TAIL_QUEUE = 256  # records buffered per `tail` client; a slower client loses the oldest, counted
STATIC = ("index.html", "app.js", "style.css")
CONTENT_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
                 "css": "text/css; charset=utf-8"}


class StatusServer:
    def __init__(self, host: str, port: int, token: str | None, views: LiveViews,
                 status: Callable[[], dict[str, Any]], metrics: Callable[[], bytes] | None,
                 command: Callable[[str, dict[str, Any]], dict[str, Any]]):
        self.host, self.port, self.token = host, port, token
        self.views = views
        self._status = status
        self._metrics = metrics
        self._command = command
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._frame_events: dict[ViewKey, asyncio.Event] = {}
        self._tails: set[_TailClient] = set()
        self._closing = False  # set at shutdown: streaming handlers end their responses
        self.requests = 0
        self.cpu_s = 0.0  # CPU time of the server's thread, sampled every second on its loop
        self.unauthorized = 0
        self.tail_dropped = 0

    # -- lifecycle (called from the daemon's threads) ----------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="edgeinfer-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"http server did not start within {timeout} s")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 3.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        except Exception as exc:  # a stuck handler must not hold the daemon's shutdown
            log.warning("http server: clean shutdown failed: %r", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = None

    @property
    def has_tail_clients(self) -> bool:
        return bool(self._tails)

    def frame_encoded(self, key: ViewKey) -> None:
        """From the encoder thread: wake the viewers of `key`."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._wake, key)

    def push_record(self, record: dict[str, Any], model: str | None, source: str | None) -> None:
        """From the publish or watchdog thread: a record for the `tail` clients (only called when there are)."""
        loop = self._loop
        if loop is not None and self._tails:
            loop.call_soon_threadsafe(self._fan_out, record, model, source)

    # -- the loop thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        lower_thread_priority()  # serving the page must not take CPU from inference on a saturated box
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        self._sample_cpu()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _startup(self) -> None:
        from aiohttp import web

        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self._page)
        for name in STATIC:
            app.router.add_get(f"/static/{name}", self._static)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/api/records", self._api_records)
        app.router.add_post("/api/command", self._api_command)
        app.router.add_get("/stream/{model}/{source}", self._stream)
        app.router.add_get("/snapshot/{model}/{source}", self._snapshot)
        if self._metrics is not None:
            app.router.add_get("/metrics", self._api_metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the bound port when 0 was asked for
        port = sockets[0].getsockname()[1] if sockets else self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}/"
        self.port = port

    def _sample_cpu(self) -> None:
        self.cpu_s = time.thread_time()
        if self._loop is not None and not self._closing:
            self._loop.call_later(1.0, self._sample_cpu)

    async def _shutdown(self) -> None:
        self._closing = True
        for tail in list(self._tails):
            if tail.queue.full():
                tail.queue.get_nowait()
            tail.queue.put_nowait(None)  # ends its response
        for event in self._frame_events.values():
            event.set()
        if self._runner is not None:
            await self._runner.cleanup()
        # whatever still runs (a handler stuck on a slow client) is cancelled and awaited here, so the loop
        # stops with no task pending
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _wake(self, key: ViewKey) -> None:
        event = self._frame_events.pop(key, None)
        if event is not None:
            event.set()

    def _frame_event(self, key: ViewKey) -> asyncio.Event:
        event = self._frame_events.get(key)
        if event is None:
            event = self._frame_events[key] = asyncio.Event()
        return event

    def _fan_out(self, record: dict[str, Any], model: str | None, source: str | None) -> None:
        for tail in self._tails:
            if not tail.wants(record, model, source):
                continue
            if tail.queue.full():
                tail.queue.get_nowait()
                tail.dropped += 1
                self.tail_dropped += 1
            tail.queue.put_nowait(record)

    # -- handlers ----------------------------------------------------------------------------------------
    def _authorised(self, request: Any) -> bool:
        if self.token is None:
            return True
        given = request.query.get("token")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer "):].strip()
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def _host_allowed(self, request: Any) -> bool:
        """Bound to loopback without a token, only requests addressed to a loopback name are served: a web page
        that points its own domain at 127.0.0.1 (DNS rebinding) cannot read the cameras through a browser on
        this box. An SSH tunnel (`-L 8321:127.0.0.1:8321`) still works; a token lifts the check."""
        if self.token is not None or self.host not in LOOPBACK:
            return True
        name = (request.host or "").rsplit(":", 1)[0] if not (request.host or "").startswith("[") else \
            request.host[1:].split("]", 1)[0]
        return name in LOOPBACK

    async def _auth_impl(self, request: Any, handler: Any) -> Any:
        from aiohttp import web

        self.requests += 1
        if not self._host_allowed(request):
            self.unauthorized += 1
            return web.json_response({"ok": False, "error": f"this page answers requests to 127.0.0.1 or "
                                      f"localhost only, not to {request.host!r}: set a token (token_file) to "
                                      f"reach it under another name"}, status=421)
        if not self._authorised(request):
            self.unauthorized += 1
            return web.json_response({"ok": False, "error": "access token missing or wrong: send "
                                      "'Authorization: Bearer TOKEN' or add ?token=TOKEN"}, status=401)
        return await handler(request)

    @property
    def _auth(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def auth(request: Any, handler: Any) -> Any:
            return await self._auth_impl(request, handler)

        return auth

    async def _page(self, request: Any) -> Any:
        return self._file("index.html")

    async def _static(self, request: Any) -> Any:
        return self._file(request.path.rsplit("/", 1)[-1])

    def _file(self, name: str) -> Any:
        from aiohttp import web

        body = resources.files("edgeinfer.web").joinpath("static", name).read_bytes()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPES[name.rsplit(".", 1)[-1]],
                                                "Cache-Control": "no-cache"})

    async def _api_status(self, request: Any) -> Any:
        from aiohttp import web

        body = await asyncio.get_running_loop().run_in_executor(None, self._status)
        return web.json_response(body, dumps=lambda obj: json.dumps(obj, default=str))

    async def _api_metrics(self, request: Any) -> Any:
        from aiohttp import web

        body = await asyncio.get_running_loop().run_in_executor(None, self._metrics)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _api_command(self, request: Any) -> Any:
        from aiohttp import web

        if request.content_type != "application/json":
            # a cross-site form or text/plain POST from another page in the same browser is refused: only a
            # JSON request (which a browser preflights, and we never allow cross-origin) reaches a command
            return web.json_response({"ok": False, "error": "send the command as Content-Type: application/json"},
                                     status=415)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return web.json_response({"ok": False, "error": f"request is not valid JSON: {exc}"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("cmd"), str):
            return web.json_response({"ok": False, "error": 'send a JSON object like {"cmd": "reset"}'},
                                     status=400)
        reply = await asyncio.get_running_loop().run_in_executor(None, self._command, body["cmd"], body)
        return web.json_response(reply, status=200 if reply.get("ok") else 400,
                                 dumps=lambda obj: json.dumps(obj, default=str))

    async def _api_records(self, request: Any) -> Any:
        from aiohttp import web

        tail = _TailClient(heartbeats=request.query.get("heartbeats") in ("1", "true", "yes"),
                           model=request.query.get("model"), source=request.query.get("source"))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
        await response.prepare(request)
        self._tails.add(tail)
        try:
            while not self._closing:
                try:
                    record = await asyncio.wait_for(tail.queue.get(), 5.0)
                except asyncio.TimeoutError:
                    await response.write(b"\n")  # a keep-alive line: finds a client that went away
                    continue
                if record is None:
                    break
                await response.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._tails.discard(tail)
        return response

    async def _stream(self, request: Any) -> Any:
        from aiohttp import web

        key = (request.match_info["model"], request.match_info["source"])
        if not self.views.add_viewer(key):
            raise web.HTTPNotFound(text=f"no live view for model {key[0]!r} and source {key[1]!r}; "
                                        f"known: {['/'.join(k) for k in self.views.keys()]}")
        response = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            "Cache-Control": "no-store", "Pragma": "no-cache"})
        try:
            await response.prepare(request)
            sent = -1
            while not self._closing:
                event = self._frame_event(key)
                jpeg, version = self.views.frame(key)
                if jpeg is not None and version != sent:
                    # only the newest frame: a slow viewer skips frames instead of queueing them
                    await response.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         f"{len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                    sent = version
                    continue
                try:
                    await asyncio.wait_for(event.wait(), 2.0)
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.views.remove_viewer(key)
        return response

    async def _snapshot(self, request: Any) -> Any:
        from aiohttp import web

        key = (request.match_info["model"], request.match_info["source"])
        jpeg = await asyncio.get_running_loop().run_in_executor(None, self.views.snapshot, key)
        if jpeg is None:
            raise web.HTTPNotFound(text=f"no frame yet for model {key[0]!r} and source {key[1]!r}")
        return web.Response(body=jpeg, headers={"Content-Type": "image/jpeg", "Cache-Control": "no-store"})


class _TailClient:
    def __init__(self, heartbeats: bool, model: str | None, source: str | None):
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(TAIL_QUEUE)
        self.heartbeats, self.model, self.source = heartbeats, model, source
        self.dropped = 0

    def wants(self, record: dict[str, Any], model: str | None, source: str | None) -> bool:
        if record.get("type") == "heartbeat":
            return self.heartbeats
        return (self.model is None or self.model == model) and (self.source is None or self.source == source)
