"""The ONNX Runtime backend on real sessions: lifecycle, shapes from the model, dynamic batch, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgeinfer.backends import BackendError, create_backend
from support.tiny_models import constant_detector

ROWS = np.array([[10, 10, 4, 4, 0.9, 0.2, 0.7]], dtype=np.float32)


def test_specs_come_from_the_model_and_batch_is_dynamic(tmp_path):
    path = constant_detector(tmp_path / "m.onnx", ROWS, size=32)
    with create_backend("m", "auto", path, {}) as backend:
        assert backend.type == "onnxruntime"
        assert [s.name for s in backend.inputs] == ["images"]
        assert backend.inputs[0].shape == (None, 3, 32, 32) and backend.inputs[0].dynamic_batch
        assert backend.max_batch is None
        assert backend.warmup_ms is not None
        out = backend.infer({"images": np.zeros((3, 3, 32, 32), np.float32)})
        assert out[0].shape == (3, 1, 7)
        np.testing.assert_allclose(out[0][2, 0], ROWS[0])
    assert not backend.is_active


def test_missing_file_and_corrupt_file_say_which_model(tmp_path):
    with pytest.raises(BackendError, match="model 'gone'.*not found"):
        create_backend("gone", "onnxruntime", tmp_path / "nope.onnx", {}).activate()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="model 'bad': ONNX Runtime cannot load"):
        create_backend("bad", "onnxruntime", bad, {}).activate()


def test_unavailable_provider_is_named_with_the_available_ones(tmp_path):
    path = constant_detector(tmp_path / "m.onnx", ROWS, size=32)
    with pytest.raises(BackendError, match="NoSuchExecutionProvider.*available: .*CPUExecutionProvider"):
        create_backend("m", "onnxruntime", path, {"providers": ["NoSuchExecutionProvider"]}).activate()


def test_infer_before_activate_is_an_error(tmp_path):
    path = constant_detector(tmp_path / "m.onnx", ROWS, size=32)
    with pytest.raises(BackendError, match="before activate"):
        create_backend("m", "auto", path, {}).infer({"images": np.zeros((1, 3, 32, 32), np.float32)})
