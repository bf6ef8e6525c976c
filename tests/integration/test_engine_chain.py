"""The per-model fallback chain with real ONNX Runtime sessions, real threads and a real daemon process.

What cannot exist here is a TensorRT engine that loads (no GPU, no TensorRT in CI): the engine links below are
real files TensorRT cannot load here, and the background rebuild uses a stand-in builder that writes a loadable
ONNX Runtime model where TensorRT's builder would write an engine. Everything downstream of "the rebuild
produced a loadable model" (the load, the hand-over, the swap between batches, closing the old model, the
heartbeat) is the product's real code.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeinfer.backends import BackendError
from edgeinfer.config import parse_config
from edgeinfer.engines.chain import ChainError, ModelChain
from edgeinfer.model import PipelineError
from edgeinfer.pipeline import Pipeline
from support.tiny_models import constant_detector

# two tiny models that answer differently, so each record says which one served it
ROWS_FALLBACK = np.array([[32, 16, 16, 8, 0.9, 0.1, 0.8]], dtype=np.float32)  # class 1 "one"
ROWS_REBUILT = np.array([[32, 16, 16, 8, 0.9, 0.8, 0.1]], dtype=np.float32)  # class 0 "zero"


def chain_config(tmp_path: Path, fallback: list[dict], frames: int = 60, fps: float = 500.0,
                 primary: str = "det.engine", extra: dict | None = None):
    (tmp_path / "labels.txt").write_text("zero\none\n")
    constant_detector(tmp_path / "fallback.onnx", ROWS_FALLBACK)
    engine = tmp_path / "det.engine"
    engine.write_bytes(b"a plan this box cannot load")
    data = {
        "sources": [{"id": "cam", "type": "synthetic", "width": 128, "height": 64, "fps": fps, "frames": frames}],
        "models": [{"id": "det", "path": primary, "labels": "labels.txt", "sources": ["cam"],
                    "decoder": {"type": "yolo", "layout": "v5", "conf_threshold": 0.5}, "fallback": fallback}],
        "outputs": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl"), "heartbeat": True}],
        **(extra or {}),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    return parse_config(yaml.safe_dump(data), base_dir=tmp_path)


def test_links_are_tried_in_order_and_each_failure_is_named(tmp_path, caplog):
    config = chain_config(tmp_path, [{"path": "other.engine"}, {"path": "fallback.onnx", "backend": "onnxruntime"}])
    chain = ModelChain(config.models[0])
    with caplog.at_level(logging.INFO, logger="edgeinfer.engines.chain"):
        model = chain.load()
    try:
        assert chain.serving == 2 and model.backend.type == "onnxruntime"
        state = chain.describe()
        assert state["link"] == 2 and state["path"] == "fallback.onnx" and state["backend"] == "onnxruntime"
        first, second, third = state["links"]
        assert first["path"] == "det.engine" and "model 'det'" in first["status"]  # TensorRT's load error
        assert second["status"] == f"file not found: {tmp_path / 'other.engine'}"
        assert third["status"] == "serving"
        logged = caplog.text
        assert logged.index("link 0 (det.engine, tensorrt) cannot load") < logged.index(
            "link 1 (other.engine, tensorrt) cannot load: file not found") < logged.index(
            "serving on link 2 (fallback.onnx, onnxruntime)")
    finally:
        model.close()


def test_no_link_loads_is_one_error_listing_every_link(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    config = chain_config(tmp_path, [{"path": "broken.onnx"}, {"path": "missing.onnx"}])
    with pytest.raises(ChainError) as err:
        ModelChain(config.models[0]).load()
    text = str(err.value)
    assert isinstance(err.value, BackendError)
    assert text.startswith("model 'det': no link of its fallback chain loads: link 0 (det.engine, tensorrt): ")
    assert "link 1 (broken.onnx, onnxruntime): model 'det': ONNX Runtime cannot load" in text
    assert f"link 2 (missing.onnx, onnxruntime): file not found: {tmp_path / 'missing.onnx'}" in text


def test_every_link_misfitting_the_config_is_a_config_error(tmp_path):
    config = chain_config(tmp_path, [{"path": "fallback.onnx"}], primary="fallback.onnx")
    model_cfg = config.models[0]
    bad = model_cfg.model_copy(update={"preprocess": model_cfg.preprocess.model_copy(update={"dtype": "uint8"})})
    with pytest.raises(PipelineError, match="no link of its fallback chain loads.*preprocess does not fit"):
        ModelChain(bad).load()  # the model takes float32: no link can fix a config that fits none of them


class GatedStandInBuilder:
    """Stands in for TensorRT's builder (which cannot run here): when released, writes a loadable ONNX Runtime
    model at the link's path, as TensorRT's builder would write the engine."""

    def __init__(self):
        self.release = threading.Event()
        self.calls = []

    def __call__(self, link) -> None:
        self.calls.append(link)
        assert self.release.wait(30), "the test never released the build"
        constant_detector(link.path, ROWS_REBUILT)


def test_background_rebuild_is_hot_swapped_between_batches_without_losing_a_frame(tmp_path, caplog):
    frames = 1200  # 4 s at 300 fps: the rebuild is released after 60 and must land well before the end
    config = chain_config(tmp_path, [
        {"path": "rebuilt.onnx", "backend": "onnxruntime", "build_from": "fallback.onnx"},
        {"path": "fallback.onnx", "backend": "onnxruntime"},
    ], frames=frames, fps=300.0)
    builder = GatedStandInBuilder()
    pipeline = Pipeline(config)
    original = ModelChain.__init__

    def with_builder(self, cfg, builders=None):
        original(self, cfg, {"onnxruntime": builder})

    stop = threading.Event()
    with caplog.at_level(logging.INFO):
        ModelChain.__init__ = with_builder
        try:
            pipeline.start()
        finally:
            ModelChain.__init__ = original
        chain, worker = pipeline.chains[0], pipeline.workers[0]
        try:
            assert chain.serving == 2 and chain.rebuilding()
            assert pipeline.serving()["det"]["links"][1]["status"].startswith("rebuilding from fallback.onnx")
            first_model = worker.model
            deadline = time.monotonic() + 30
            while pipeline.gate.count < 60 and time.monotonic() < deadline:
                time.sleep(0.01)
            builder.release.set()  # mid-stream: the rebuild finishes while frames flow
            chain.wait_rebuilds(30)
            reason = pipeline.wait(stop)
        finally:
            builder.release.set()
            pipeline.stop()
    assert reason == "end-of-input"
    assert [link.path.name for link in builder.calls] == ["rebuilt.onnx"]
    assert chain.serving == 1 and worker.swaps == 1
    assert pipeline.serving()["det"]["link"] == 1
    assert pipeline.serving()["det"]["links"][1]["status"] == "serving (rebuilt)"
    assert not first_model.backend.is_active  # the old model was closed once its last set was decoded
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    records = [r for r in records if r.get("type") != "heartbeat"]
    assert [r["frame"] for r in records] == list(range(frames))  # every frame once, in order, across the swap
    labels = [r["detections"][0]["label"] for r in records]
    switch = labels.index("zero")
    assert switch >= 60 and set(labels[:switch]) == {"one"} and set(labels[switch:]) == {"zero"}
    assert "rebuilding link 1 (rebuilt.onnx, onnxruntime) from" in caplog.text
    assert "serving on link 1 (rebuilt.onnx, onnxruntime)" in caplog.text
    assert "swapped to onnxruntime" in caplog.text


def test_rebuild_that_fails_keeps_the_daemon_on_the_next_link(tmp_path):
    config = chain_config(tmp_path, [
        {"path": "rebuilt.engine", "build_from": "fallback.onnx"},  # TensorRT's builder: not installed here
        {"path": "fallback.onnx", "backend": "onnxruntime"},
    ])
    chain = ModelChain(config.models[0])
    model = chain.load()
    try:
        chain.wait_rebuilds(60)
        assert chain.serving == 2
        status = chain.describe()["links"][1]["status"]
        assert status.startswith("rebuild failed: no TensorRT builder (tensorrt or tensorrt_rtx) can be imported")
    finally:
        model.close()
        chain.close()


def test_daemon_heartbeat_and_log_say_which_link_serves(tmp_path):
    chain_config(tmp_path, [{"path": "fallback.onnx", "backend": "onnxruntime"}], frames=40, fps=100.0)
    proc = subprocess.run([sys.executable, "-m", "edgeinfer", "run", str(tmp_path / "config.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "serving on link 1 (fallback.onnx, onnxruntime)" in proc.stderr
    assert "link 0 (det.engine, tensorrt) cannot load" in proc.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    beats = [r for r in lines if r.get("type") == "heartbeat"]
    assert beats, "no heartbeat"
    assert all(b["serving"]["det"]["link"] == 1 and b["serving"]["det"]["path"] == "fallback.onnx" for b in beats)
    assert len([r for r in lines if r.get("type") != "heartbeat"]) == 40


def test_check_passes_when_a_link_loads_and_names_the_rest(tmp_path):
    chain_config(tmp_path, [{"path": "fallback.onnx", "backend": "onnxruntime"}])
    proc = subprocess.run([sys.executable, "-m", "edgeinfer", "check", str(tmp_path / "config.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
    assert "link 0 (det.engine, tensorrt) cannot load" in proc.stderr
