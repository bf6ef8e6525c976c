"""Hostile config files: each gets exit 2 with the key path from `check` and `run`, never a traceback.

Each case here was a traceback or a wrong answer before (issue 8): non-UTF-8 bytes, bad explicit YAML tags,
nesting 500 deep, overlong path components, non-finite numbers, duplicate keys, a directory as a model path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeinfer.cli import main
from edgeinfer.config import ConfigError, parse_config
from edgeinfer.preflight import load_config
from edgeinfer.watchdog import build_specs
from support.tiny_models import constant_detector

VALID = """\
sources:
  - id: cam0
    type: synthetic
    width: 64
    height: 48
models:
  - id: det
    path: tiny.onnx
    sources: [cam0]
    budget_ms: 500
    decoder: {layout: v5}
outputs:
  - type: jsonl
    path: "-"
watchdog:
  output_alive_s: 5
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    constant_detector(tmp_path / "tiny.onnx", np.array([[32, 32, 10, 10, 0.9, 0.9]]))
    return tmp_path


def _refused(config_dir: Path, capsys, content: str | bytes, key_path: str, *words: str) -> str:
    path = config_dir / "config.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    errs = []
    for command in (["check", str(path)], ["run", str(path)]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert f"  {key_path}" in err if key_path else "invalid config" in err, err
        for word in words:
            assert word in err, (word, err)
        errs.append(err)
    return errs[0]


def test_the_base_config_is_valid(config_dir, capsys):
    (config_dir / "config.yaml").write_text(VALID)
    assert main(["check", str(config_dir / "config.yaml")]) == 0


def test_non_utf8_bytes_say_where(config_dir, capsys):
    content = VALID.replace("cam0\n    type", "cam\xe90\n    type").encode("latin-1")
    _refused(config_dir, capsys, content, "", "not UTF-8", "0xe9", "line 2")


@pytest.mark.parametrize("value, tag", [("!!int abc", "!!int"), ("!!float abc", "!!float"),
                                        ("!!timestamp 2001-13-45", "!!timestamp"), ("!!binary zz", "base64")])
def test_bad_yaml_tags_name_the_key(config_dir, capsys, value, tag):
    _refused(config_dir, capsys, VALID.replace("budget_ms: 500", f"budget_ms: {value}"), "models[0].budget_ms",
             tag, "line 10")


def test_deep_nesting_is_refused_without_a_traceback(config_dir, capsys):
    deep = VALID + "extra: " + "[" * 500 + "]" * 500 + "\n"
    err = _refused(config_dir, capsys, deep, "extra[0][0]", "nested more than")
    assert len(err.splitlines()) < 10


@pytest.mark.parametrize("key, value, key_path", [
    ("budget_ms: 500", "budget_ms: .inf", "models[0].budget_ms"),
    ("budget_ms: 500", "budget_ms: 1.0e400", "models[0].budget_ms"),
    ("budget_ms: 500", "budget_ms: .nan", "models[0].budget_ms"),
    ("output_alive_s: 5", "output_alive_s: .inf", "watchdog.output_alive_s"),
    ("budget_ms: 500", "budget_ms: 500\n    min_fps: 1.0e-320", "models[0].min_fps"),
])
def test_non_finite_durations_are_refused(config_dir, capsys, key, value, key_path):
    _refused(config_dir, capsys, VALID.replace(key, value), key_path)


def test_duplicate_keys_are_refused_with_both_lines(config_dir, capsys):
    _refused(config_dir, capsys, VALID.replace("budget_ms: 500", "budget_ms: 500\n    budget_ms: 5"),
             "models[0].budget_ms", "duplicate key", "line 10", "line 11")
    _refused(config_dir, capsys, VALID + "watchdog: {}\n", "watchdog", "duplicate key")


def test_merge_keys_still_work_and_may_override(config_dir):
    text = VALID.replace("budget_ms: 500", "<<: {budget_ms: 9, max_batch: 1}\n    budget_ms: 500")
    config = parse_config(text)
    assert config.models[0].budget_ms == 500 and config.models[0].max_batch == 1


def test_overlong_path_component_is_refused_before_any_stat(config_dir, capsys):
    long_name = "m" * 300 + ".onnx"
    _refused(config_dir, capsys, VALID.replace("tiny.onnx", long_name), "models[0].path", "305 bytes", "255")
    _refused(config_dir, capsys, VALID.replace("type: synthetic\n    width: 64\n    height: 48",
                                               f"type: video\n    path: {'v' * 256}/x.mp4"),
             "sources[0].path", "255")
    (config_dir / ("c" * 300 + ".yaml")).parent.mkdir(exist_ok=True)
    assert main(["check", str(config_dir / ("c" * 300 + ".yaml"))]) == 2


def test_a_directory_as_model_path_says_so(config_dir, capsys):
    (config_dir / "model_dir").mkdir()
    _refused(config_dir, capsys, VALID.replace("tiny.onnx", "model_dir"), "models[0].path", "is a directory")


def test_labels_shorter_than_the_classes_warn_with_both_numbers(config_dir, capsys, caplog):
    # the tiny detector has 1 class; give it a 3-class model instead and a 2-line labels file
    constant_detector(config_dir / "tiny.onnx", np.array([[32, 32, 10, 10, 0.9, 0.1, 0.2, 0.9]]))
    (config_dir / "names.txt").write_text("a\nb\n")
    (config_dir / "config.yaml").write_text(VALID.replace("budget_ms: 500", "budget_ms: 500\n    labels: names.txt"))
    assert main(["check", str(config_dir / "config.yaml")]) == 0
    out = capsys.readouterr()
    assert "1 warning(s) for config" in out.err, out
    assert "  models[0].labels: 2 label(s)" in out.err and "3 classes" in out.err, out


# -- fuzz: whatever the text, the answer is a Config or a clean ConfigError -------------------------------
_TOKENS = ["\n", " ", "  ", ":", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "<<: ", "!!int ", "!!float ",
           "!!timestamp ", "!!binary ", "!!set ", "!foo ", "? ", "'", '"', ".inf", "-.inf", ".nan", "1.0e400",
           "1e-320", "0", "-1", "null", "~", "true", "\t", "#", "|", ">", "%YAML 1.1\n", "---\n", "...\n",
           "budget_ms", "min_fps", "output_alive_s", "period_ms", "sources", "models", "path", "\x00", "\ufeff",
           "é", "x" * 300]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_configs_get_only_the_clean_config_error(data):
    text = VALID
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:at] + data.draw(st.sampled_from(_TOKENS)) + text[at:]
        else:
            text = text[:at] + text[at + data.draw(st.integers(1, 12)):]
    try:
        config = parse_config(text, "fuzz", base_dir=Path("/nonexistent"))
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p.message, str) for p in exc.problems)
        return
    # a config that loads must also build its watchdog (this is where `.inf` used to overflow, in `run`)
    build_specs(config.watchdog, [(s.id, s.min_fps) for s in config.sources],
                [(m.id, m.budget_ms, m.min_fps) for m in config.models], [o.id or o.type for o in config.outputs])


@settings(max_examples=30, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                               max_size=3), max_leaves=12))
def test_fuzzed_structures_under_each_section(value):
    for section in ("sources", "models", "outputs", "watchdog"):
        data = yaml.safe_load(VALID)
        data[section] = value
        try:
            parse_config(yaml.safe_dump(data), "fuzz")
        except ConfigError:
            pass


def test_load_config_logs_nothing_for_a_valid_file(config_dir, caplog):
    (config_dir / "config.yaml").write_text(VALID)
    with caplog.at_level(logging.WARNING):
        load_config(config_dir / "config.yaml")
    assert not caplog.records
