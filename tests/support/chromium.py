"""A real headless Chromium (Debian's `chromium`, installed by tests/system-deps.sh) driven over the DevTools
protocol with aiohttp's WebSocket client: navigate, evaluate JavaScript in the page, take screenshots."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """`async with Chromium(tmp_path) as browser:` starts the browser and attaches to its first tab."""

    def __init__(self, workdir: Path, width: int = 1280, height: int = 1100):
        self.workdir = workdir
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self._session: Any = None
        self._ws: Any = None
        self._next_id = 0
        self.console: list[str] = []

    async def __aenter__(self) -> Chromium:
        import aiohttp

        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium not found: run tests/system-deps.sh")
        profile = self.workdir / "chromium-profile"
        profile.mkdir(exist_ok=True)
        self._stderr = (self.workdir / "chromium.log").open("w")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", f"--window-size={self.size[0]},{self.size[1]}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self._stderr)
        port = await self._devtools_port(profile / "DevToolsActivePort")
        self._session = aiohttp.ClientSession()
        for _ in range(50):
            async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t.get("type") == "page"]
            if pages:
                break
            await asyncio.sleep(0.1)
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Runtime.enable")
        await self.send("Page.enable")
        return self

    async def _devtools_port(self, path: Path, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                first = path.read_text().splitlines()
                if first and first[0].isdigit():
                    return int(first[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited ({self.proc.returncode}): "
                                   f"{(self.workdir / 'chromium.log').read_text()[-2000:]}")
            await asyncio.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port in time")

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        call_id = self._next_id
        await self._ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = await asyncio.wait_for(self._ws.receive(), 30)
            data = json.loads(message.data)
            if data.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description"))) for a in
                                             data["params"].get("args", [])))
            if data.get("id") == call_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = await self.evaluate(expression)
            except RuntimeError as exc:  # the page is not there yet (still loading): try again
                value = str(exc)[:300]
            else:
                if value:
                    return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what} ({expression} was {value!r})")

    async def screenshot(self, path: Path, clip: dict[str, float] | None = None) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = base64.b64decode((await self.send("Page.captureScreenshot", **params))["data"])
        path.write_bytes(data)
        return data
