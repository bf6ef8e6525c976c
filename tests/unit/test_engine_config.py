"""The `fallback:` and `build:` keys of a model: bad values exit 2 naming the key path; a missing primary is a
warning when a chain follows it."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from edgeinfer.cli import main
from edgeinfer.config import ConfigError
from edgeinfer.preflight import load_config
from support.tiny_models import constant_detector


def config(tmp_path, fallback, path="tiny.onnx"):
    constant_detector(tmp_path / "tiny.onnx", np.array([[32, 32, 10, 10, 0.9, 0.9]]))
    data = {"sources": [{"id": "cam0", "type": "synthetic", "width": 64, "height": 48, "fps": 30}],
            "models": [{"id": "det", "path": path, "sources": ["cam0"], "fallback": fallback}],
            "outputs": [{"type": "jsonl", "path": "-"}]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "config.yaml"


@pytest.mark.parametrize("fallback, where, message", [
    ([{"path": "tiny.onnx", "colour": 1}], "models[0].fallback[0].colour", "unknown key; allowed keys: path, "
     "backend, backend_options, device, build_from, build"),
    ([{"path": "tiny.onnx", "backend": "onnxruntime", "backend_options": {"threads": 2}}],
     "models[0].fallback[0].backend_options.threads", "unknown key; allowed keys: providers"),
    ([{"path": "tiny.onnx", "device": "tpu"}], "models[0].fallback[0].device", "unknown device 'tpu'"),
    ([{"path": "x.engine", "build_from": "tiny.onnx", "build": {"precision": "fp8"}}],
     "models[0].fallback[0].build.precision", "'auto', 'fp32', 'fp16', 'int8' or 'best'"),
    ([{"path": "x.engine", "build_from": "tiny.onnx", "build": {"shapes": "1,2"}}],
     "models[0].fallback[0].build.shapes", "expected MIN,OPT,MAX"),
    ([{"path": "x.engine", "build_from": "missing.onnx"}], "models[0].fallback[0].build_from", "file not found"),
    ([{"path": "tiny.onnx", "device": "dla0"}], "models[0].fallback[0].device", "dla0 runs TensorRT engines only"),
])
def test_bad_fallback_links_name_the_key_path(tmp_path, capsys, fallback, where, message):
    path = config(tmp_path, fallback)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert where in text and message in text, text
    assert main(["check", "--no-models", str(path)]) == 2


def test_missing_primary_is_a_warning_when_a_chain_follows(tmp_path, caplog):
    path = config(tmp_path, [{"path": "tiny.onnx"}], path="gone.engine")
    cfg = load_config(path)
    assert cfg.models[0].fallback[0].path == tmp_path / "tiny.onnx"  # resolved against the config's folder
    assert "models[0].path: file not found" in caplog.text and "the fallback chain serves" in caplog.text
    with pytest.raises(ConfigError, match="models\\[0\\].path: file not found"):
        load_config(config(tmp_path, [], path="gone.engine"))  # no chain: still an error
