"""Defaults that do not hurt in the field: a JSONL file holds records, not heartbeats, and rotates by size; a
camera that is not there reads DEGRADED once instead of flapping OK <-> DEGRADED (issue 20).

Before: a `jsonl` file output wrote a heartbeat every 50 ms cycle (171 lines, 228 KB in 8.6 s, ~2.3 GB a day) and
never rotated; an unplugged camera logged OK -> DEGRADED / DEGRADED -> OK eight times in 4 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeinfer.outputs.jsonl import JsonlOutput, JsonlOutputConfig
from edgeinfer.runtime import RuntimeContext
from support.tiny_models import constant_detector

MAX_BYTES = 8192


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return constant_detector(tmp_path / "tiny.onnx", np.array([[32, 32, 10, 10, 0.9, 0.9]]))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _daemon(tmp_path: Path, data: dict) -> subprocess.Popen:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    return subprocess.Popen([sys.executable, "-m", "edgeinfer", "run", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    return stderr


def test_a_jsonl_file_gets_no_heartbeats_by_default_and_rotates_at_the_configured_size(tmp_path, tiny):
    out = tmp_path / "out.jsonl"
    proc = _daemon(tmp_path, {
        "sources": [{"id": "cam", "type": "synthetic", "width": 64, "height": 48, "fps": 100}],
        "models": [{"id": "det", "path": str(tiny), "sources": ["cam"], "decoder": {"layout": "v5"}}],
        "outputs": [{"type": "jsonl", "path": str(out), "rotate": {"max_bytes": MAX_BYTES, "keep": 2}}]})
    deadline = time.monotonic() + 60
    while not (tmp_path / "out.jsonl.2").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # a few more rotations, so the oldest file has been dropped
    stderr = _stop(proc)
    files = sorted(tmp_path.glob("out.jsonl*"))
    assert [f.name for f in files] == ["out.jsonl", "out.jsonl.1", "out.jsonl.2"], stderr  # keep: 2
    records = {f.name: _lines(f) for f in files}
    assert all(r["type"] == "detections" for rs in records.values() for r in rs)  # not one heartbeat
    for f in files:
        assert f.stat().st_size <= MAX_BYTES
    record_size = max(len(json.dumps(r, separators=(",", ":"))) + 1 for r in records["out.jsonl.1"])
    for name in ("out.jsonl.1", "out.jsonl.2"):  # full files: no room left for one more record
        assert (tmp_path / name).stat().st_size > MAX_BYTES - 2 * record_size
    # newest in out.jsonl, then .1, then .2; nothing lost between them
    frames = [r["frame"] for name in ("out.jsonl.2", "out.jsonl.1", "out.jsonl") for r in records[name]]
    assert frames == list(range(frames[0], frames[0] + len(frames)))
    assert frames[0] > 0  # the first records were rotated out


def test_heartbeats_when_asked_for_are_thinned_to_the_interval_plus_state_changes(tmp_path):
    path = tmp_path / "beats.jsonl"
    output = JsonlOutput(JsonlOutputConfig(path=str(path), heartbeat=True, heartbeat_interval_s=3600), "jsonl")
    output.open(RuntimeContext())
    for state in ["OK"] * 20 + ["DEGRADED"] * 20 + ["OK"] * 5:
        output.heartbeat({"type": "heartbeat", "state": state})
    output.close()
    assert [r["state"] for r in _lines(path)] == ["OK", "DEGRADED", "OK"]


def test_a_file_renamed_by_logrotate_is_reopened_at_its_path(tmp_path):
    path = tmp_path / "out.jsonl"
    output = JsonlOutput(JsonlOutputConfig(path=str(path)), "jsonl")
    output.open(RuntimeContext())
    output.write_record({"type": "detections", "frame": 0})
    path.rename(tmp_path / "out.jsonl.1")  # what logrotate does by default (no copytruncate)
    output._next_path_check = 0  # the once-a-second look, now
    output.write_record({"type": "detections", "frame": 1})
    output.close()
    assert [r["frame"] for r in _lines(tmp_path / "out.jsonl.1")] == [0]
    assert [r["frame"] for r in _lines(path)] == [1]


def test_copytruncate_leaves_no_hole_in_the_file(tmp_path):
    path = tmp_path / "out.jsonl"
    output = JsonlOutput(JsonlOutputConfig(path=str(path)), "jsonl")
    output.open(RuntimeContext())
    for frame in range(50):
        output.write_record({"type": "detections", "frame": frame})
    os.truncate(path, 0)  # logrotate copytruncate: copy away, then empty the file in place
    output.write_record({"type": "detections", "frame": 50})
    output.close()
    assert b"\0" not in path.read_bytes()
    assert [r["frame"] for r in _lines(path)] == [50]


def test_rotate_on_stdout_is_a_config_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "sources": [{"id": "cam", "type": "synthetic", "frames": 1}],
        "models": [{"id": "det", "path": "m.onnx", "sources": ["cam"]}],
        "outputs": [{"type": "jsonl", "path": "-", "rotate": {"max_bytes": 100000}}]}))
    proc = subprocess.run([sys.executable, "-m", "edgeinfer", "check", "--no-models", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "outputs[0]" in proc.stderr and "rotate: needs a file path" in proc.stderr


@pytest.mark.parametrize("source", [
    {"type": "camera", "device": "/dev/video63"},  # unplugged
    {"type": "rtsp", "url": "rtsp://127.0.0.1:9/dead", "open_timeout_ms": 500},  # a dead server: connection refused
], ids=["unplugged-camera", "dead-rtsp-server"])
def test_a_dead_source_logs_one_transition_to_degraded_not_a_flapping_series(tmp_path, tiny, source):
    proc = _daemon(tmp_path, {
        "sources": [{"id": "cam", **source, "reconnect": {"initial_s": 0.2, "max_s": 0.5}}],
        "models": [{"id": "det", "path": str(tiny), "sources": ["cam"], "decoder": {"layout": "v5"}}],
        "outputs": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl"), "heartbeat": True}],
        "watchdog": {"startup_grace_ms": 1000}})
    time.sleep(6.0)  # ~15 failed reconnects, the grace period over, the alive check failing
    stderr = _stop(proc)
    transitions = [line for line in stderr.splitlines() if "watchdog: " in line and " -> " in line]
    assert len([t for t in transitions if "OK -> DEGRADED" in t]) == 1, "\n".join(transitions)
    assert not [t for t in transitions if "-> OK" in t], "\n".join(transitions)
    beats = [r for r in _lines(tmp_path / "out.jsonl") if r["type"] == "heartbeat"]
    assert beats[-1]["entities"]["cam"]["faults"] >= 4  # it did keep trying, with clean cycles in between
    first_degraded = next(i for i, b in enumerate(beats) if b["state"] == "DEGRADED")
    assert {b["state"] for b in beats[first_degraded:]} == {"DEGRADED"}
