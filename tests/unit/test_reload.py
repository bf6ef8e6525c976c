"""The Reloader (reload.py) in-process: a real Daemon with a real ONNX model, a real source and a JSONL file;
reloads driven through the same methods the signal handlers call."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeinfer.preflight import load_config
from edgeinfer.reload import STOP_WITHIN_S, Reloader, prepare
from support.tiny_models import constant_detector

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return constant_detector(tmp_path / "tiny.onnx", np.array([[32, 32, 10, 10, 0.9, 0.9]]))


def write_config(path: Path, tiny: Path, out: Path, model_id: str = "det", source: dict | None = None,
                 **model_extra) -> Path:
    source = source or {"type": "synthetic", "width": 64, "height": 48, "fps": 50}
    data = {"sources": [{"id": "v", **source}],
            "models": [{"id": model_id, "path": str(tiny), "sources": ["v"], "decoder": {"layout": "v5"},
                        **model_extra}],
            "outputs": [{"type": "jsonl", "path": str(out), "heartbeat": True}],
            "watchdog": {"period_ms": 50}}
    path.write_text(yaml.safe_dump(data))
    return path


def lines(out: Path) -> list[dict]:
    if not out.exists():
        return []
    text = out.read_text()
    return [json.loads(line) for line in text.splitlines()[: text.count("\n")]]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Running:
    """A Reloader started, its run() on a thread (the CLI runs it on the main thread)."""

    def __init__(self, config_path: Path, max_frames: int | None = None, **kwargs):
        self.reloader = Reloader(str(config_path), load_config(config_path), max_frames=max_frames, **kwargs)
        self.failures: list[str] = []
        self.reloader.on_failure.append(self.failures.append)
        self.reloader.start()
        self.result: tuple[str, int] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.reloader.run()

    def stop(self) -> tuple[str, int] | None:
        self.reloader.request_stop()
        self.thread.join(STOP_WITHIN_S)
        self.reloader.close()
        return self.result


def models_in(out: Path) -> set[str]:
    return {r["model"] for r in lines(out) if r["type"] == "detections"}


def test_a_good_reload_swaps_the_pipeline_and_a_bad_one_keeps_it(tmp_path, tiny):
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path / "c.yaml", tiny, out)
    run = Running(config)
    try:
        wait_until(lambda: "det" in models_in(out), 30, "records of det")
        first = run.reloader.daemon
        write_config(config, tiny, out, model_id="det2")
        run.reloader.request_reload()
        wait_until(lambda: "det2" in models_in(out), 30, "records of det2")
        assert run.reloader.daemon is not first and run.reloader.status["done"] == 1

        second = run.reloader.daemon
        labels = tmp_path / "labels.txt"
        labels.write_text("a\nb\n")
        write_config(config, labels, out, model_id="det3")  # a model path that is a labels file
        run.reloader.request_reload()
        wait_until(lambda: run.failures, 30, "the reload to fail")
        assert run.reloader.daemon is second and run.result is None  # the same pipeline goes on
        count = len(lines(out))
        wait_until(lambda: len(lines(out)) > count + 5, 10, "records after the failed reload")
        events = [r for r in lines(out) if r["type"] == "reload_failed"]
        assert len(events) == 1 and "labels.txt" in events[0]["reason"], events
        beats = [r for r in lines(out) if r["type"] == "heartbeat" and r.get("reloads", {}).get("failed")]
        assert beats and beats[-1]["reloads"]["done"] == 1
    finally:
        assert run.stop() == ("stopped", 0)


def test_a_layout_the_model_does_not_have_is_refused_before_the_switch(tmp_path, tiny):
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path / "c.yaml", tiny, out)
    good = load_config(config)
    write_config(config, tiny, out, decoder={"layout": "v8"})
    with pytest.raises(Exception, match="decoder"):
        prepare(str(config))
    assert good.models[0].id == "det"


def test_a_stop_during_a_slow_reload_is_not_lost(tmp_path, tiny):
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path / "c.yaml", tiny, out)
    loading = threading.Event()
    release = threading.Event()

    def slow_prepare(path: str):  # a model that takes long to load (a TensorRT engine on a Jetson)
        loading.set()
        release.wait(30)
        return prepare(path)

    run = Running(config, prepare_config=slow_prepare)
    try:
        wait_until(lambda: models_in(out), 30, "records")
        run.reloader.request_reload()
        assert loading.wait(10)
        started = time.monotonic()
        run.reloader.request_stop()
        run.thread.join(STOP_WITHIN_S)
        assert run.result == ("stopped", 0) and time.monotonic() - started < STOP_WITHIN_S
    finally:
        release.set()
        run.stop()


def test_a_stop_right_after_a_reload_request_stops(tmp_path, tiny):
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path / "c.yaml", tiny, out)
    run = Running(config)
    wait_until(lambda: models_in(out), 30, "records")
    write_config(config, tiny, out, model_id="det2")
    run.reloader.request_reload()
    time.sleep(0.05)  # the reload is being prepared, or switching
    run.reloader.request_stop()
    run.thread.join(STOP_WITHIN_S)
    assert run.result == ("stopped", 0)
    run.stop()


def test_max_frames_counts_over_the_process(tmp_path, tiny):
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path / "c.yaml", tiny, out, source={"type": "synthetic", "width": 64, "height": 48,
                                                                   "fps": 20})
    run = Running(config, max_frames=60)
    wait_until(lambda: len(models_in(out)) and len([r for r in lines(out) if r["type"] == "detections"]) >= 10,
               30, "10 records")
    run.reloader.request_reload()
    run.thread.join(30)
    assert run.result == ("max-frames", 0)
    assert len([r for r in lines(out) if r["type"] == "detections"]) == 60
    assert run.reloader.status["done"] == 1
    run.stop()


def test_a_reloaded_video_resumes_where_it_was(tmp_path, tiny, demo_video):
    out = tmp_path / "out.jsonl"
    source = {"type": "video", "path": str(demo_video)}
    config = write_config(tmp_path / "c.yaml", tiny, out, source=source)
    run = Running(config)
    wait_until(lambda: len([r for r in lines(out) if r["type"] == "detections"]) >= 40, 60, "40 records")
    run.reloader.request_reload()
    run.thread.join(60)
    assert run.result == ("end-of-input", 0)
    frames = [r["frame"] for r in lines(out) if r["type"] == "detections"]
    assert len(frames) == len(set(frames)), "a frame number was published twice"
    assert max(frames) == 249 and run.reloader.status["done"] == 1
    accounts = run.reloader.accounts()["det"]
    # frames in flight at the switch are dropped for the reload; every one of the 250 is accounted for
    assert accounts["in"] == 250 == accounts["out"] + sum(accounts["dropped"].values()) + accounts["in_flight"]
    assert accounts["out"] == len(frames)
    run.stop()


def test_a_new_pipeline_that_cannot_start_brings_the_previous_config_back(tmp_path, tiny):
    """What only fails at the switch (here: a ZeroMQ output port that another process holds) restarts the
    previous config; the reload is refused like any other."""
    zmq = pytest.importorskip("zmq")
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path / "c.yaml", tiny, out)
    context = zmq.Context()
    squatter = context.socket(zmq.PUB)
    port = squatter.bind_to_random_port("tcp://127.0.0.1")
    run = Running(config)
    try:
        wait_until(lambda: "det" in models_in(out), 30, "records of det")
        data = yaml.safe_load(config.read_text())
        data["models"][0]["id"] = "det2"
        data["outputs"].append({"type": "zmq", "endpoint": f"tcp://127.0.0.1:{port}", "control_endpoint": None})
        config.write_text(yaml.safe_dump(data))
        run.reloader.request_reload()
        wait_until(lambda: run.failures, 30, "the reload to fail at the switch")
        assert "cannot start" in run.failures[0] and "previous config runs again" in run.failures[0]
        count = len([r for r in lines(out) if r.get("model") == "det"])
        wait_until(lambda: len([r for r in lines(out) if r.get("model") == "det"]) > count + 5, 10,
                   "records of the previous config")
        assert "det2" not in models_in(out) and run.reloader.status == {
            "done": 0, "failed": 1, "last_failure": run.failures[0]}
        assert [r["type"] for r in lines(out) if r["type"] == "reload_failed"] == ["reload_failed"]
    finally:
        assert run.stop() == ("stopped", 0)
        squatter.close(linger=0)
        context.term()
