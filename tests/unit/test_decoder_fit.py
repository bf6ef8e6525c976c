"""A decoder layout that does not fit the model is refused by `check` and start-up (issue 8).

Before: `layout: v8` on the v5 demo model passed `check` and published "score": 629.9, "label": "class_437";
`auto` took an RT-DETR-shaped [1, 300, 4+nc] output for v5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeinfer.cli import main
from edgeinfer.decoders import DecodeError
from edgeinfer.decoders.yolo import resolve_layout
from support.tiny_models import constant_detector


def _config(tmp_path: Path, model: Path, decoder: dict, labels: Path | None = None) -> Path:
    data = {
        "sources": [{"id": "cam", "type": "synthetic", "width": 64, "height": 48}],
        "models": [{"id": "det", "path": str(model), "sources": ["cam"], "decoder": decoder}],
        "outputs": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
    }
    if labels is not None:
        data["models"][0]["labels"] = str(labels)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_v8_layout_on_the_v5_demo_model_is_refused_by_check_and_run(tmp_path, demo_model, capsys):
    path = _config(tmp_path, demo_model.onnx, {"type": "yolo", "layout": "v8"})
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "decoder.layout: v8 does not fit" in err and "layout v5 fits them" in err, err
    assert "but scores lie in [0, 1]" in err
    assert main(["run", str(path)]) == 2
    assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").read_text() == ""


def test_the_right_layout_on_the_demo_model_passes(tmp_path, demo_model, capsys):
    path = _config(tmp_path, demo_model.onnx, {"type": "yolo", "layout": "v5"}, demo_model.labels)
    assert main(["check", str(path)]) == 0
    assert "warning(s) for config" not in capsys.readouterr().err


def test_scores_outside_0_1_are_refused(tmp_path, capsys):
    # a v5-shaped model whose "objectness" column holds logits (an export without the sigmoid)
    model = constant_detector(tmp_path / "logits.onnx", np.array([[32, 32, 10, 10, 7.5, 0.9, 0.1]] * 8))
    assert main(["check", str(_config(tmp_path, model, {"type": "yolo", "layout": "v5"}))]) == 2
    err = capsys.readouterr().err
    assert "models[0]" in err and "decoder.layout: v5" in err and "7.5" in err, err


def test_boxes_far_outside_the_input_are_refused(tmp_path, capsys):
    model = constant_detector(tmp_path / "far.onnx", np.array([[5000, 32, 10, 10, 0.9, 0.9, 0.1]] * 8))
    assert main(["check", str(_config(tmp_path, model, {"type": "yolo", "layout": "v5"}))]) == 2
    err = capsys.readouterr().err
    assert "far outside the 64x64 input" in err, err


@pytest.mark.parametrize("shape, labels", [((1, 300, 84), 80), ((1, 300, 84), 0), ((1, 100, 95), 91)])
def test_auto_refuses_transformer_shaped_outputs_and_names_the_key(shape, labels):
    with pytest.raises(DecodeError, match=r"RT-DETR.*set decoder.layout: v5"):
        resolve_layout("auto", shape, labels)


def test_auto_still_takes_grid_heads_from_the_shape():
    assert resolve_layout("auto", (1, 2535, 85), 0) == "v5"
    assert resolve_layout("auto", (1, 300, 85), 80) == "v5"  # the class count says v5
    assert resolve_layout("v5", (1, 300, 84), 80) == "v5"  # an explicit layout is the user's word
