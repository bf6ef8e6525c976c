"""`send: uint8` and `send: jpeg`: the daemon sends the letterboxed frame (or a JPEG of it) and a real Triton
ensemble preprocesses it on the server, against the local ONNX Runtime on the same frames.

The server is the `tritonserver` bundled in nvidia-pytriton, started directly on the example model repository
(`examples/triton/model_repository`: Python-backend preprocessing steps, the demo network run by ONNX Runtime in a
Python-backend model, `yolo_uint8` and `yolo_jpeg` ensembles chaining them). Its venv needs Pillow for the JPEG
step (`make triton-server`).
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import yaml

from edgeinfer.backends import BackendError, create_backend
from edgeinfer.config import parse_config
from edgeinfer.preprocess import PreprocessConfig
from support.frames import save_video_frames
from support.pipeline_run import run_pipeline
from support.triton_server import EXAMPLE_REPOSITORY, TritonServer, require_server_python

pytestmark = pytest.mark.slow
pytest.importorskip("tritonclient.grpc", reason="tritonclient is in the dev extra (make setup)")

PREPROCESS = {"resize": "letterbox", "color": "rgb", "scale": 1 / 255}
DECODER = {"type": "yolo", "layout": "v5", "conf_threshold": 0.25, "iou_threshold": 0.45}


@pytest.fixture(scope="module")
def ensemble_server(demo_model, tmp_path_factory):
    python = require_server_python()
    if subprocess.run([str(python), "-c", "import PIL"], capture_output=True).returncode != 0:
        pytest.skip(f"the Triton server venv ({python}) has no Pillow for the JPEG step: rerun `make triton-server`")
    srv = TritonServer(demo_model.onnx, tmp_path_factory.mktemp("triton") / "triton.log", name="yolo_jpeg",
                       repository=EXAMPLE_REPOSITORY, threads=1).start()
    yield srv
    srv.stop()


def options(server, model: str, **extra) -> dict:
    return {"url": server.grpc_url, "model_name": model, "deadline_ms": 10_000, **extra}


def model_entry(demo_model, model_id: str, **extra) -> dict:
    return {"id": model_id, "path": str(demo_model.onnx), "labels": str(demo_model.labels), "sources": ["bikes"],
            "preprocess": PREPROCESS, "decoder": DECODER, **extra}


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_frames_and_jpegs_preprocessed_by_the_server_find_the_local_detections(ensemble_server, demo_model,
                                                                                demo_video, tmp_path):
    """Three models on frames of the demo video with cars and people, every frame in order: the local ONNX
    Runtime, Triton with send: uint8 and with send: jpeg. uint8 gives the local boxes (the server does the same
    arithmetic); JPEG (quality 95) is lossy, so its boxes match the local ones by IoU."""
    frames = 16
    save_video_frames(demo_video, tuple(range(130, 130 + 2 * frames, 2)), tmp_path / "frames")
    out = tmp_path / "out.jsonl"
    data = {
        "sources": [{"id": "bikes", "type": "images", "path": str(tmp_path / "frames")}],
        "models": [model_entry(demo_model, "local", backend="onnxruntime",
                               backend_options={"intra_op_threads": 1}),
                   model_entry(demo_model, "uint8", backend="triton",
                               backend_options=options(ensemble_server, "yolo_uint8", send="uint8")),
                   model_entry(demo_model, "jpeg", backend="triton",
                               backend_options=options(ensemble_server, "yolo_jpeg", send="jpeg", jpeg_quality=95))],
        "outputs": [{"type": "jsonl", "path": str(out)}],
    }
    config = parse_config(yaml.safe_dump(data), base_dir=tmp_path)
    reason, _ = run_pipeline(config, max_frames=3 * frames, timeout=180)
    assert reason == "max-frames"
    by_model: dict[str, dict[int, dict]] = {"local": {}, "uint8": {}, "jpeg": {}}
    for r in (json.loads(x) for x in out.read_text().splitlines()):
        by_model[r["model"]][r["frame"]] = r
    common = sorted(set(by_model["local"]) & set(by_model["uint8"]) & set(by_model["jpeg"]))
    assert len(common) == frames, common
    boxes = matched = 0
    for seq in common:
        local, uint8, jpeg = (by_model[m][seq] for m in ("local", "uint8", "jpeg"))
        assert local["status"] == uint8["status"] == jpeg["status"] == "ok", (local, uint8, jpeg)
        assert len(uint8["detections"]) == len(local["detections"]), seq
        for a, b in zip(uint8["detections"], local["detections"]):
            assert a["class_id"] == b["class_id"] and abs(a["score"] - b["score"]) < 1e-3
            assert np.allclose(a["bbox"], b["bbox"], atol=0.02), (seq, a, b)
        for b in local["detections"]:
            boxes += 1
            matched += any(a["class_id"] == b["class_id"] and iou(a["bbox"], b["bbox"]) >= 0.7
                           for a in jpeg["detections"])
    assert boxes >= frames, "these frames show cars and people: boxes must be found"
    print(f"\n{len(common)} frames: uint8 {boxes} boxes equal to the local ones; JPEG q95 matched {matched}/{boxes}")
    assert matched >= 0.8 * boxes


def test_uint8_through_shared_memory_and_the_socket_equals_the_float_tensor(ensemble_server, demo_model):
    """Backend level, the pipeline's path (input stage, requests in flight): the frame preprocessed by the
    server's ensemble gives the outputs of the float tensor preprocessed here, sent to the network alone."""
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (272, 640, 3), dtype=np.uint8) for _ in range(3)]
    config = PreprocessConfig(**PREPROCESS)
    with create_backend("m", "triton", demo_model.onnx, options(ensemble_server, "yolo")) as floats:
        stage = floats.open_input_stage(config, batch=1, fixed_batch=False)
        want = []
        for image in images:
            stage.write(0, 0, image)
            want.append(floats.infer(stage.feeds(0, 1))[0].copy())
    for shared_memory in ("system", "none"):
        backend = create_backend("m", "triton", demo_model.onnx, options(
            ensemble_server, "yolo_uint8", send="uint8", shared_memory=shared_memory, buffer_sets=3))
        with backend:
            assert backend.uses_shared_memory == (shared_memory == "system")
            assert backend.inputs[0].dtype == np.uint8 and backend.inputs[0].shape == (None, 416, 416, 3)
            stage = backend.open_input_stage(backend.preprocess_config(config), batch=1, fixed_batch=False)
            for i, image in enumerate(images):
                stage.write(i, 0, image)
            handles = [backend.submit(i, 1) for i in range(3)]
            got = [h.wait()[0][0].copy() for h in handles]  # shared-memory outputs are views: copy before close
        for g, w in zip(got, want):
            assert np.allclose(g, w, atol=1e-4), (shared_memory, float(np.abs(g - w).max()))


def test_a_server_model_that_does_not_take_what_is_sent_is_refused_naming_both(ensemble_server, demo_model):
    cases = [("yolo", "uint8", "send: uint8 needs a server model that takes the frame"),
             ("yolo_uint8", "jpeg", "send: jpeg needs a server model that takes one JPEG per image"),
             ("yolo_jpeg", "uint8", "its input 'jpeg' is BYTES"),
             ("preprocess_jpeg", "jpeg", "send: jpeg needs the frame size the model takes")]  # no image_size
    for model, send, words in cases:
        backend = create_backend("m", "triton", demo_model.onnx, options(ensemble_server, model, send=send))
        with pytest.raises(BackendError) as error:
            backend.activate()
        backend.deactivate()
        assert words in str(error.value) and f"model '{model}'" in str(error.value), str(error.value)
