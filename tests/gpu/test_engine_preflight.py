"""The compatibility pre-flight inside the TensorRT backend's activation, on a real GPU: the manifest is
checked against this GPU's real device properties before the runtime is asked to deserialize. The engine call
is the stand-in runtime (standin_tensorrt.py says why); the GPU facts and the backend are real."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeinfer.artifacts.manifest import Manifest, TensorInfo, sha256_file
from edgeinfer.backends import BackendError, create_backend

pytestmark = pytest.mark.gpu


def _engine_with_manifest(tmp_path: Path, cc: str, gpu_name: str, ccs: list[str] | None = None) -> Path:
    from standin_tensorrt import __version__, write_engine

    engine = write_engine(tmp_path / "scale.engine", standin="scale", shape=[3, 64, 64], max_batch=4)
    Manifest(flavour="full", tensorrt_version=__version__, runtime_module="standin_tensorrt", gpu_name=gpu_name,
             compute_capability=cc, dla_core=None, precision="fp32", onnx_sha256=None,
             engine_sha256=sha256_file(engine), engine_bytes=engine.stat().st_size,
             io=[TensorInfo("input", "input", [-1, 3, 64, 64], "float32")], compute_capabilities=ccs).write(engine)
    return engine


def _this_gpu():
    from edgeinfer.cuda import runtime as cu

    info = cu.device_info(0)
    return info.name, "{}.{}".format(*info.compute_capability)


def test_wrong_compute_capability_is_refused_before_deserializing(tmp_path):
    name, cc = _this_gpu()
    other = "8.6" if cc != "8.6" else "8.9"
    engine = _engine_with_manifest(tmp_path, other, "Some Other GPU", ccs=[other, "12.0"])
    backend = create_backend("m", "tensorrt", engine, {"runtime": "standin_tensorrt"}, "gpu")
    with pytest.raises(BackendError) as err:
        backend.activate()
    assert str(err.value) == (f"model 'm': engine {engine} cannot run here: compute capability {cc} ({name}), "
                              f"engine supports {other} 12.0")
    assert backend.engine is None  # never deserialized


def test_matching_manifest_loads(tmp_path):
    name, cc = _this_gpu()
    engine = _engine_with_manifest(tmp_path, cc, name)
    backend = create_backend("m", "tensorrt", engine, {"runtime": "standin_tensorrt"}, "gpu")
    backend.activate()
    try:
        assert backend.engine is not None
    finally:
        backend.deactivate()
