"""Config validation: every bad config is refused with its key path and what is allowed, exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeinfer.cli import main
from edgeinfer.config import ConfigError
from edgeinfer.preflight import load_config
from support.tiny_models import constant_detector

BASE = {
    "sources": [{"id": "cam0", "type": "synthetic", "width": 64, "height": 48, "fps": 30}],
    "models": [
        {
            "id": "det",
            "path": "tiny.onnx",
            "sources": ["cam0"],
            "decoder": {"type": "yolo", "layout": "v5", "conf_threshold": 0.3},
        }
    ],
    "outputs": [{"type": "jsonl", "path": "-"}],
}


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    constant_detector(tmp_path / "tiny.onnx", np.array([[32, 32, 10, 10, 0.9, 0.9]]))
    return tmp_path


def write(config_dir: Path, data) -> Path:
    path = config_dir / "config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def mutate(**changes):
    """A deep copy of BASE with dotted-path changes applied; value None deletes the key."""
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        node = data
        parts = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        for part in parts[:-1]:
            node = node[part]
        if value is None:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return data


def test_valid_config_loads_and_resolves_paths_relative_to_the_file(config_dir):
    config = load_config(write(config_dir, BASE))
    assert config.models[0].path == config_dir / "tiny.onnx"
    assert config.sources[0].type == "synthetic"
    assert main(["check", str(config_dir / "config.yaml")]) == 0


# (what is wrong, the config, the key path the error must name, words the message must hold)
BAD_CONFIGS = [
    ("not yaml", "sources: [\n  - id: a\n   bad", "", ["not valid YAML", "line"]),
    ("empty file", "", "", ["mapping", "empty"]),
    ("top level is a list", "- 1\n- 2\n", "", ["mapping", "list"]),
    ("unknown top-level key", mutate(sorces=[]), "sorces", ["unknown key", "sources", "models"]),
    ("no sources", mutate(sources=None), "sources", ["required"]),
    ("empty models list", mutate(models=[]), "models", ["at least 1"]),
    ("unknown source type", mutate(**{"sources.0.type": "webcam"}), "sources[0]",
     ["webcam", "video", "rtsp", "synthetic"]),
    ("video source without path", mutate(sources=[{"id": "v", "type": "video"}]), "sources[0].path",
     ["required"]),
    ("bad id characters", mutate(**{"sources.0.id": "cam 0!"}), "sources[0].id", ["pattern"]),
    ("unknown key in a source", mutate(**{"sources.0.fsp": 5}), "sources[0].fsp", ["unknown key", "fps"]),
    ("model names a missing source", mutate(**{"models.0.sources": ["cam0", "cam9"]}), "models[0].sources[1]",
     ["unknown source 'cam9'", "cam0"]),
    ("duplicate source ids", mutate(sources=[BASE["sources"][0], BASE["sources"][0]]), "sources[1].id",
     ["duplicate"]),
    ("bad resize mode", mutate(**{"models.0.preprocess": {"resize": "crop"}}), "models[0].preprocess.resize",
     ["letterbox", "stretch"]),
    ("bad layout", mutate(**{"models.0.preprocess": {"layout": "chw"}}), "models[0].preprocess.layout",
     ["nchw", "nhwc"]),
    ("threshold out of range", mutate(**{"models.0.decoder.conf_threshold": 1.5}),
     "models[0].decoder.conf_threshold", ["1"]),
    ("decoder without type", mutate(**{"models.0.decoder": {"conf_threshold": 2}}), "models[0].decoder.conf_threshold",
     ["less than or equal to 1"]),
    ("unknown decoder type", mutate(**{"models.0.decoder": {"type": "ssd"}}), "models[0].decoder",
     ["ssd", "yolo"]),
    ("unknown backend", mutate(**{"models.0.backend": "tensorflow"}), "models[0].backend",
     ["auto", "onnxruntime"]),
    ("unknown backend option", mutate(**{"models.0.backend_options": {"threads": 2}}),
     "models[0].backend_options.threads", ["unknown key", "intra_op_threads"]),
    ("max_batch zero", mutate(**{"models.0.max_batch": 0}), "models[0].max_batch", ["greater than or equal"]),
    ("unknown output type", mutate(outputs=[{"type": "kafka"}]), "outputs[0]", ["kafka", "jsonl"]),
    ("watchdog period too short", mutate(watchdog={"period_ms": 1}), "watchdog.period_ms", ["greater"]),
    ("safety entity unknown", mutate(watchdog={"safety_relevant": ["lidar"]}), "watchdog.safety_relevant[0]",
     ["lidar", "cam0", "det"]),
    ("model file missing", mutate(**{"models.0.path": "missing.onnx"}), "models[0].path",
     ["not found", "missing.onnx"]),
    ("video file missing", mutate(sources=[{"id": "cam0", "type": "video", "path": "nope.mp4"}]), "sources[0].path",
     ["nope.mp4"]),
    ("wrong type for a number", mutate(**{"models.0.budget_ms": "fast"}), "models[0].budget_ms", ["number"]),
    ("ros2 topic with '-'", mutate(sources=[{"id": "cam0", "type": "ros2", "topic": "/camera/image-raw"}]),
     "sources[0].topic", ["not a valid ROS 2 topic name"]),
    ("ros2 source transport", mutate(sources=[{"id": "cam0", "type": "ros2", "topic": "/c", "transport": "h264"}]),
     "sources[0].transport", ["raw", "compressed"]),
    ("ros2 detections topic without {model}", mutate(outputs=[{"type": "ros2", "detections_topic": "/dets"}]),
     "outputs[0].detections_topic", ["{model}"]),
    ("ros2 reliability", mutate(outputs=[{"type": "ros2", "qos": {"detections": {"reliability": "sometimes"}}}]),
     "outputs[0].qos.detections.reliability", ["reliable", "best_effort"]),
    ("ros2 qos preset", mutate(outputs=[{"type": "ros2", "qos": {"image": {"preset": "fast"}}}]),
     "outputs[0].qos.image.preset", ["default", "sensor_data"]),
    ("ros2 unknown qos topic", mutate(outputs=[{"type": "ros2", "qos": {"detection": {}}}]),
     "outputs[0].qos.detection", ["unknown key", "detections", "label_info", "heartbeat"]),
    ("ros lifecycle", mutate(ros={"lifecycle": "maybe"}), "ros.lifecycle", ["auto", "on", "off"]),
    ("ros namespace", mutate(ros={"namespace": "robot1"}), "ros.namespace", ["absolute"]),
]


@pytest.mark.parametrize("what, data, key_path, words", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_key_and_allowed_values(config_dir, capsys, what, data, key_path, words):
    path = write(config_dir, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    matching = [p for p in problems if p.path == key_path]
    assert matching, f"no problem at {key_path!r}; got {[str(p) for p in problems]}"
    text = " ".join(p.message for p in matching).lower()
    for word in words:
        assert word.lower() in text, f"{word!r} not in {text!r}"
    # the CLI says the same and exits 2, for `check` and for `run` (which must start nothing)
    assert main(["check", str(path)]) == 2
    assert key_path in capsys.readouterr().err
    assert main(["run", str(path)]) == 2


def test_every_problem_is_reported_at_once(config_dir):
    data = mutate(**{"models.0.decoder.conf_threshold": 7, "models.0.max_batch": 0, "sources.0.id": "9x",
                     "models.0.sources": ["cam0", "nope"]})
    with pytest.raises(ConfigError) as info:
        load_config(write(config_dir, data))
    paths = {p.path for p in info.value.problems}
    assert {"models[0].decoder.conf_threshold", "models[0].max_batch", "sources[0].id",
            "models[0].sources[1]"} <= paths


@pytest.mark.parametrize("change, words", [
    ({"models.0.decoder": {"type": "yolo", "layout": "v8"}}, ["decoder", "v8"]),
    ({"models.0.preprocess": {"size": [32, 32]}}, ["preprocess.size", "64"]),
    ({"models.0.preprocess": {"layout": "nhwc"}}, ["layout nhwc", "channels"]),
], ids=["decoder layout", "input size", "input layout"])
def test_check_loads_the_model_and_refuses_a_config_that_does_not_fit_it(config_dir, capsys, change, words):
    path = write(config_dir, mutate(**change))
    load_config(path)  # the file alone is valid...
    assert main(["check", "--no-models", str(path)]) == 0
    capsys.readouterr()
    assert main(["check", str(path)]) == 2  # ...but not with this model
    err = capsys.readouterr().err
    assert "models[0]" in err and all(w in err for w in words), err
    assert main(["run", str(path)]) == 2  # and run refuses it before any source starts
