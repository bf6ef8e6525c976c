"""The http output from outside, as a user meets it: a real daemon running the demo model on the demo's frames
(sent over ZeroMQ by the test), the page loaded in a real headless Chromium, /metrics read with
prometheus-client's own parser, and `edgeinfer status` / `edgeinfer tail` run as commands.

The injected fault is a camera that dies: the test stops sending frames, the source's alive check expires and
the watchdog leaves OK. Screenshots are kept in the test's tmp dir (paths printed; `pytest -s` shows them).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from support.chromium import Chromium, chromium_binary
from support.rtsp_server import free_port
from support.status_daemon import FrameFeeder, StatusDaemon, demo_frames

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed: tests/system-deps.sh")


def wait_until(predicate, timeout: float, what: str, daemon: StatusDaemon | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    log = daemon.process.stderr() if daemon else ""
    raise AssertionError(f"timed out waiting for {what}\n{log}")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def png_pixels(data: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@needs_chromium
def test_page_shows_the_live_view_and_the_watchdog_state_in_chromium(tmp_path, demo_model, demo_video):
    daemon = StatusDaemon(tmp_path, demo_model)
    feeder = FrameFeeder(daemon.endpoint, demo_frames(demo_video), fps=10)
    try:
        daemon.process.wait_for(lambda lines: len([r for r in lines if r["type"] == "detections"]) >= 5, 60,
                                "the first records")

        async def scenario() -> dict:
            async with Chromium(tmp_path) as browser:
                await browser.navigate(daemon.url)
                await browser.wait_for("document.getElementById('state').dataset.state === 'OK'", 30,
                                       "the page to show OK")
                view = "document.querySelector('#views img')"
                width = await browser.wait_for(f"{view} && {view}.naturalWidth", 30, "the live view's first frame")
                rect = await browser.evaluate(f"(() => {{ const r = {view}.getBoundingClientRect(); "
                                              "return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
                first = await browser.screenshot(tmp_path / "live-1.png", clip=rect)
                await asyncio.sleep(1.5)
                second = await browser.screenshot(tmp_path / "live-2.png", clip=rect)
                entities_ok = await browser.evaluate("document.querySelector('#entities tbody').textContent")
                feeder.stop()  # the injected fault: the camera stops delivering
                await browser.wait_for("document.getElementById('state').dataset.state !== 'OK'", 30,
                                       "the page to leave OK after the camera stopped")
                state = await browser.evaluate("document.getElementById('state').dataset.state")
                rows = await browser.evaluate(
                    "[...document.querySelectorAll('#entities tbody tr')].map(tr => "
                    "[...tr.children].map(td => td.textContent))")
                await browser.screenshot(tmp_path / "status-page-fault.png")
                return {"width": width, "first": first, "second": second, "state": state, "rows": rows,
                        "entities_ok": entities_ok}

        seen = asyncio.run(scenario())
    finally:
        feeder.stop()
        daemon.stop()
    print(f"\nscreenshots: {tmp_path / 'live-1.png'}, {tmp_path / 'live-2.png'}, "
          f"{tmp_path / 'status-page-fault.png'}")
    assert seen["width"] == 640  # the demo's frames, drawn at their own size
    a, b = png_pixels(seen["first"]), png_pixels(seen["second"])
    assert a.shape == b.shape
    changed = float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))
    assert changed > 2.0, f"the live view did not change between screenshots (mean abs diff {changed:.2f})"
    assert "cam" in seen["entities_ok"] and "yolov3-tiny" in seen["entities_ok"]
    assert seen["state"] in ("DEGRADED", "FAULT", "SAFE_STOP", "UNREACHABLE")
    cam = next(row for row in seen["rows"] if row[0] == "cam")
    assert cam[2] in ("FAILED", "EXPIRED"), seen["rows"]  # FAILED first, EXPIRED once it stays dead
    assert "no alive indication" in cam[6], cam


def test_metrics_parse_and_their_counters_equal_the_records_published(tmp_path, demo_model, demo_video):
    from prometheus_client.parser import text_string_to_metric_families

    daemon = StatusDaemon(tmp_path, demo_model)
    feeder = FrameFeeder(daemon.endpoint, demo_frames(demo_video, 60), fps=20, count=60)
    try:
        feeder.done.wait(30)

        def settled():  # no new record for a second after the sender finished
            before = len(daemon.process.records())
            time.sleep(1.0)
            return before if before and len(daemon.process.records()) == before else 0

        wait_until(settled, 30, "the records to settle", daemon)
        with urllib.request.urlopen(daemon.url + "metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        records = daemon.process.records()
        status = get_json(daemon.url + "api/status")
        # no token, bound to loopback: a request addressed to another name (DNS rebinding) is refused
        rebound = urllib.request.Request(daemon.url + "api/status", headers={"Host": "evil.example:8321"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=5)
        localhost = get_json(daemon.url.replace("127.0.0.1", "localhost") + "api/status")
        # clients still connected at shutdown (a viewer, a tail) must not hold or disturb the daemon's stop
        held = [open_request(daemon.url, path) for path in ("stream/yolov3-tiny/cam", "api/records")]
        time.sleep(0.5)
    finally:
        feeder.stop()
        code = daemon.stop()
    for sock in held:
        sock.close()
    assert code == 0, daemon.process.stderr()
    assert "Traceback" not in daemon.process.stderr() and "was destroyed" not in daemon.process.stderr()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)

    def total(name, **labels):
        return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))

    assert 0 < len(records) <= 60
    assert refused.value.code == 421 and localhost["ok"] is True
    assert total("edgeinfer_records_total") == len(records)
    assert total("edgeinfer_records_total", model="yolov3-tiny", source="cam", status="ok") == \
        len([r for r in records if r["status"] == "ok"])
    assert total("edgeinfer_model_frames_published_total", model="yolov3-tiny") == len(records)
    assert total("edgeinfer_output_published_total", output="http") == len(records)
    assert total("edgeinfer_inference_seconds_count", model="yolov3-tiny") == len(records)
    assert total("edgeinfer_end_to_end_seconds_count", model="yolov3-tiny", source="cam") == len(records)
    received = status["stats"]["sources"]["cam"]["frames"]
    assert total("edgeinfer_source_frames_total", source="cam") == received
    taken = status["stats"]["models"]["yolov3-tiny"]["taken"]
    assert received == taken + total("edgeinfer_frames_dropped_total", model="yolov3-tiny", source="cam")
    assert total("edgeinfer_watchdog_state") == 1  # exactly one state is on
    assert {s.labels["state"] for s in samples["edgeinfer_watchdog_state"]} == {"OK", "DEGRADED", "FAULT",
                                                                                 "SAFE_STOP"}


def edgeinfer(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeinfer", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_status_and_tail_commands_follow_the_running_daemon(tmp_path, demo_model, demo_video):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-for-the-test\n")
    control = f"tcp://127.0.0.1:{free_port()}"
    pub = f"tcp://127.0.0.1:{free_port()}"
    zmq_out = {"type": "zmq", "endpoint": pub, "control_endpoint": control}
    daemon = StatusDaemon(tmp_path, demo_model, http={"token_file": str(token_file), "port": free_port()},
                          extra_outputs=[zmq_out])
    feeder = FrameFeeder(daemon.endpoint, demo_frames(demo_video), fps=10)
    try:
        daemon.process.wait_for(lambda lines: [r for r in lines if r.get("state") == "OK"] and
                                len([r for r in lines if r["type"] == "detections"]) >= 3, 60, "records")
        url = ["--url", daemon.url]
        refused = edgeinfer("status", *url)  # no token
        ok = edgeinfer("status", *url, "--token-file", str(token_file))
        as_json = edgeinfer("status", *url, "--token-file", str(token_file), "--json")
        by_config = edgeinfer("status", "--config", str(daemon.process.config_path))
        tail = edgeinfer("tail", *url, "--token-file", str(token_file), "-n", "3", "--json")
        tail_text = edgeinfer("tail", *url, "--token-file", str(token_file), "-n", "2")
        tail_zmq = edgeinfer("tail", "--zmq", pub, "-n", "2", "--json")
        token = token_file.read_text().strip()
        reset = post(daemon.url + "api/command", b'{"cmd": "reset"}', "application/json", token)
        cross_site = post(daemon.url + "api/command", b'{"cmd": "reset"}', "text/plain", token)
        no_token = post(daemon.url + "api/command", b'{"cmd": "reset"}', "application/json", None)
        feeder.stop()  # the camera dies
        wait_until(lambda: get_json_with_token(daemon.url, token_file)["state"] != "OK", 30, "the state to "
                   "leave OK", daemon)
        degraded = edgeinfer("status", *url, "--token-file", str(token_file))
        over_zmq = edgeinfer("status", "--zmq", control, "--json")
    finally:
        feeder.stop()
        daemon.stop()
    gone = edgeinfer("status", *url, "--token-file", str(token_file))

    assert refused.returncode == 3 and "token" in refused.stderr
    assert reset[0] == 200 and reset[1]["ok"] is True, reset
    assert cross_site[0] == 415 and no_token[0] == 401
    assert ok.returncode == 0, ok.stdout + ok.stderr
    print("\n" + ok.stdout + "\n" + degraded.stdout)
    assert ok.stdout.startswith("edgeinfer OK")
    model_line = next(line for line in ok.stdout.splitlines() if line.strip().startswith("yolov3-tiny"))
    source_line = next(line for line in ok.stdout.splitlines() if line.strip().startswith("cam "))
    assert " fps" in model_line and "infer" in model_line and "onnxruntime" in model_line
    assert " fps" in source_line and "newest frame" in source_line and " ms old" in source_line
    status = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and status["state"] == "OK"
    assert status["heartbeat"]["fps"]["yolov3-tiny"] > 0 and "cam" in status["heartbeat"]["frame_age_ms"]
    assert by_config.returncode == 0, by_config.stderr  # the URL and the token found from the config
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert tail.returncode == 0 and len(lines) == 3
    assert all(r["type"] == "detections" and r["source"] == "cam" and r["model"] == "yolov3-tiny" for r in lines)
    assert [r["frame"] for r in lines] == sorted(r["frame"] for r in lines)
    assert len(tail_text.stdout.splitlines()) == 2 and "cam#" in tail_text.stdout
    assert [json.loads(line)["source"] for line in tail_zmq.stdout.splitlines()] == ["cam", "cam"], tail_zmq.stderr
    assert degraded.returncode in (1, 2), degraded.stdout
    assert degraded.stdout.split()[1] in ("DEGRADED", "FAULT", "SAFE_STOP")
    assert "cam: EXPIRED" in degraded.stdout or "cam: FAILED" in degraded.stdout, degraded.stdout
    zmq_status = json.loads(over_zmq.stdout)
    assert over_zmq.returncode in (1, 2) and zmq_status["state"] != "OK", over_zmq.stdout + over_zmq.stderr
    assert gone.returncode == 3 and "cannot reach" in gone.stderr


def post(url: str, body: bytes, content_type: str, token: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def open_request(url: str, path: str) -> socket.socket:
    host, port = url.split("//")[1].rstrip("/").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


def get_json_with_token(url: str, token_file) -> dict:
    request = urllib.request.Request(url + "api/status",
                                     headers={"Authorization": f"Bearer {token_file.read_text().strip()}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())



def test_the_page_is_served_again_after_a_reload(tmp_path, demo_model, demo_video):
    import signal

    port = free_port()
    daemon = StatusDaemon(tmp_path, demo_model, http={"port": port})
    feeder = FrameFeeder(daemon.endpoint, demo_frames(demo_video), fps=10)
    try:
        daemon.process.wait_for(lambda lines: len([r for r in lines if r["type"] == "detections"]) >= 3, 60,
                                "records")
        viewer = open_request(daemon.url, "stream/yolov3-tiny/cam")  # connected across the reload
        daemon.process.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: daemon.process.stderr().count("status page on") >= 2, 30, "the reload", daemon)
        before = len(daemon.process.records())
        daemon.process.wait_for(lambda lines: len([r for r in lines if r["type"] == "detections"]) > before + 3,
                                60, "records after the reload")
        status = get_json(daemon.url + "api/status")
        with urllib.request.urlopen(daemon.url + "snapshot/yolov3-tiny/cam", timeout=5) as response:
            jpeg = response.read()
        viewer.close()
    finally:
        feeder.stop()
        code = daemon.stop()
    assert daemon.url == f"http://127.0.0.1:{port}/"
    assert status["state"] in ("OK", "DEGRADED") and status["uptime_s"] < 30
    assert status["stats"]["models"]["yolov3-tiny"]["published"] > 0  # the new pipeline's counters
    assert png_pixels(jpeg).shape == (272, 640, 3)
    assert code == 0 and "Traceback" not in daemon.process.stderr(), daemon.process.stderr()
