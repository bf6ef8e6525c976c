"""The backend seam and the GPU path's CPU-side parts, with no GPU: devices in the config, the TensorRT API
the backend touches against the real `tensorrt_lean` module, and the errors a box without a GPU gives."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml

from edgeinfer.backends import BackendError, create_backend, resolve_backend_type
from edgeinfer.backends.base import Backend, CompletedInference, TensorSpec
from edgeinfer.backends.schema import OnnxRuntimeOptions, TensorRTOptions
from edgeinfer.backends.tensorrt import TENSORRT_API
from edgeinfer.config import ConfigError, ModelConfig, parse_config
from edgeinfer.decoders import YoloDecoderConfig, create_decoder
from edgeinfer.devices import parse_device
from edgeinfer.frame import Frame
from edgeinfer.health import NullReporter
from edgeinfer.mailbox import FrameSlots
from edgeinfer.model import Model
from edgeinfer.pipeline import ModelWorker, PublishGate
from edgeinfer.preprocess import PreprocessConfig
from edgeinfer.results import Detections


# -- devices -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,kind,index", [("auto", "auto", 0), ("cpu", "cpu", 0), ("gpu", "gpu", 0),
                                             ("gpu:3", "gpu", 3), ("dla0", "dla", 0), ("dla1", "dla", 1)])
def test_device_parsing(text, kind, index):
    device = parse_device(text)
    assert (device.processor, device.index) == (kind, index)


@pytest.mark.parametrize("bad", ["cuda", "gpu:", "dla2", "GPU", "gpu:-1", ""])
def test_unknown_device_is_a_config_error_naming_the_key_and_choices(bad):
    data = {"sources": [{"id": "s", "type": "synthetic"}],
            "models": [{"id": "m", "path": "m.onnx", "sources": ["s"], "device": bad}]}
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_dump(data))
    text = str(err.value)
    assert "models[0].device" in text and "gpu:N" in text and "dla0" in text


def test_auto_picks_tensorrt_for_engine_files(tmp_path):
    assert resolve_backend_type("auto", tmp_path / "m.engine") == "tensorrt"
    assert resolve_backend_type("auto", tmp_path / "m.plan") == "tensorrt"
    assert resolve_backend_type("auto", tmp_path / "m.onnx") == "onnxruntime"


def _check(tmp_path, model: dict) -> subprocess.CompletedProcess:
    (tmp_path / "m.engine").write_bytes(b"x" * 64)
    data = {"sources": [{"id": "s", "type": "synthetic", "frames": 1}],
            "models": [{"id": "m", "sources": ["s"], **model}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return subprocess.run([sys.executable, "-m", "edgeinfer", "check", str(path)], capture_output=True, text=True,
                          timeout=120)


def _gpu_count() -> int:
    try:
        from edgeinfer.cuda import runtime

        return runtime.device_count()
    except Exception:
        return 0


@pytest.mark.skipif(_gpu_count() > 0, reason="this box has a GPU")
def test_engine_on_a_box_without_gpu_exits_2_saying_so(tmp_path):
    proc = _check(tmp_path, {"path": "m.engine"})
    assert proc.returncode == 2, proc.stderr
    assert "models[0].device" in proc.stderr
    assert "no CUDA GPU" in proc.stderr or "needs CUDA" in proc.stderr, proc.stderr


def test_dla_needs_an_engine_and_an_engine_needs_a_gpu(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    proc = _check(tmp_path, {"path": "m.onnx", "device": "dla0"})
    assert proc.returncode == 2 and "dla0 runs TensorRT engines only" in proc.stderr, proc.stderr
    proc = _check(tmp_path, {"path": "m.engine", "device": "cpu"})
    assert proc.returncode == 2 and "not on the cpu" in proc.stderr, proc.stderr


@pytest.mark.skipif(_gpu_count() > 0, reason="this box has a GPU")
def test_tensorrt_backend_without_gpu_raises_backend_error(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    backend = create_backend("m", "tensorrt", engine, {}, "gpu")
    with pytest.raises(BackendError, match="no CUDA GPU|needs CUDA|not available"):
        backend.activate()
    assert not backend.is_active


def test_tensorrt_options_validate_runtime_names():
    assert TensorRTOptions(runtime="tensorrt_lean").runtime == "tensorrt_lean"
    assert TensorRTOptions(runtime="tests.standin").runtime == "tests.standin"
    with pytest.raises(ValueError, match="runtime must be"):
        TensorRTOptions(runtime="not a module")


def test_onnxruntime_on_a_gpu_device_without_cuda_provider_says_what_is_available(demo_model):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    backend = create_backend("m", "onnxruntime", demo_model.onnx, {}, "gpu")
    with pytest.raises(BackendError, match="CUDAExecutionProvider.*not available.*CPUExecutionProvider"):
        backend.activate()


# -- conformance against the real TensorRT runtime module ----------------------------------------------------
def test_every_tensorrt_attribute_the_backend_uses_exists_in_tensorrt_lean():
    trt = pytest.importorskip("tensorrt_lean", reason="pip install tensorrt-lean-cu13 (the dev extra has it)")
    missing = []
    for owner, names in TENSORRT_API.items():
        obj = trt if owner == "" else getattr(trt, owner)
        missing += [f"{owner or 'tensorrt_lean'}.{n}" for n in names if not hasattr(obj, n)]
    assert not missing, f"attributes the backend uses but tensorrt_lean lacks: {missing}"
    assert trt.nptype(trt.DataType.HALF) is np.float16


def test_the_gpu_tests_standin_implements_the_same_api():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "gpu" / "standin_tensorrt.py"
    spec = importlib.util.spec_from_file_location("standin_tensorrt", path)
    standin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standin)
    owners = {"": standin, "ILogger": standin.ILogger, "Runtime": standin.Runtime,
              "ICudaEngine": standin._EngineBase, "IExecutionContext": standin._Context,
              "TensorIOMode": standin.TensorIOMode}
    missing = [f"{o}.{n}" for o, names in TENSORRT_API.items() for n in names if not hasattr(owners[o], n)]
    assert not missing


# -- the seam: a buffer set is free only after its outputs are decoded ---------------------------------------
class PerSetOutputBackend(Backend):
    """Like a GPU backend, returns views of per-set output buffers that the set's next run overwrites. The
    answer encodes the frame: one box whose class is the input's mean pixel value."""

    type = "per-set-test"
    options_model = OnnxRuntimeOptions

    def _activate_impl(self):
        self.inputs = [TensorSpec("images", (None, 3, 32, 32), np.dtype(np.float32))]
        self.outputs = [TensorSpec("dets", (None, 1, 6), np.dtype(np.float32))]
        self._out = None

    def _infer_impl(self, feeds):
        return [np.zeros((feeds["images"].shape[0], 1, 6), np.float32)]

    def submit(self, set_index, n):
        if self._out is None:
            self._out = [np.zeros((self.input_stage.batch, 1, 6), np.float32) for _ in range(self.input_stage.sets)]
        feed = self.input_stage.feed(set_index, n)
        out = self._out[set_index]
        for i in range(n):
            out[i, 0] = (1, 1, 10, 10, 0.9, round(float(feed[i].mean())))
        return CompletedInference([out[:n]], 0.1)

    def _deactivate_impl(self):
        pass


class SlowDecoder:
    payload_type = Detections

    def __init__(self, inner):
        self.inner = inner

    def decode(self, outputs, index, transform):
        time.sleep(0.01)  # the publish thread lags: sets are refilled meanwhile unless held until decoded
        return self.inner.decode(outputs, index, transform)


class ListOutput:
    id = "list"

    def __init__(self):
        self.results = []

    def publish(self, result):
        self.results.append(result)


def test_buffer_set_is_reused_only_after_its_outputs_are_decoded(tmp_path):
    config = ModelConfig(id="m", path=tmp_path / "x", sources=["s"], decoder={"layout": "v10"},
                         preprocess={"resize": "stretch", "scale": 1.0})
    backend = PerSetOutputBackend("m", tmp_path / "x", OnnxRuntimeOptions())
    backend.activate()
    stage = backend.open_input_stage(PreprocessConfig(resize="stretch", scale=1.0), 1, fixed_batch=False)
    decoder = SlowDecoder(create_decoder(YoloDecoderConfig(layout="v10", conf_threshold=0.5), [],
                                         [(None, 1, 6)]))
    model = Model(config, backend, stage, decoder, batch=1)
    slots = FrameSlots(["s"])
    out = ListOutput()
    worker = ModelWorker(model, [out], slots, NullReporter(), PublishGate(None), lambda: True)
    worker.in_order_sources.add("s")
    worker.start()
    frames = 40

    def feed():
        for i in range(frames):
            image = np.full((32, 32, 3), i * 5, np.uint8)
            slots.put(Frame("s", i, image, time.monotonic(), time.time()), wait=True)
        slots.end("s")

    threading.Thread(target=feed, daemon=True).start()
    assert worker.finished.wait(30)
    worker.stop()
    worker.join(time.monotonic() + 2)
    model.close()
    assert [r.seq for r in out.results] == list(range(frames))
    wrong = [(r.seq, r.payload[0].class_id) for r in out.results if r.payload[0].class_id != r.seq * 5]
    assert not wrong, f"outputs overwritten before they were decoded: {wrong[:5]}"
