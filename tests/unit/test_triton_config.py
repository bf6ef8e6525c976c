"""The `triton` backend's options: validated with the config (key paths, allowed values, exit 2), the request
deadline derived from the model's budget, and no tritonclient needed to load or check a config."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from edgeinfer.cli import main
from edgeinfer.config import ConfigError, parse_config

BASE = {
    "sources": [{"id": "cam0", "type": "synthetic"}],
    "models": [{"id": "det", "path": "/models/det.onnx", "sources": ["cam0"], "backend": "triton",
                "budget_ms": 200, "backend_options": {"url": "triton.local:8001"}}],
}


def with_options(options: dict, **model) -> dict:
    data = copy.deepcopy(BASE)
    data["models"][0]["backend_options"] = options
    data["models"][0].update(model)
    return data


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_dump(data))
    return [str(p) for p in err.value.problems]


def test_deadline_follows_the_budget_and_leaves_half_for_the_fallback():
    plain = parse_config(yaml.safe_dump(BASE)).models[0]
    assert plain.backend_options["deadline_ms"] == 200
    fallback = parse_config(yaml.safe_dump(with_options({"url": "h:1", "fallback": {}}))).models[0]
    assert fallback.backend_options["deadline_ms"] == 100
    explicit = parse_config(yaml.safe_dump(with_options({"deadline_ms": 42, "fallback": {}}))).models[0]
    assert explicit.backend_options["deadline_ms"] == 42
    default_budget = parse_config(yaml.safe_dump(with_options({}, budget_ms=1000))).models[0]
    assert default_budget.backend_options["deadline_ms"] == 1000


@pytest.mark.parametrize("options, path, words", [
    ({"url": "grpc://h:8001"}, "models[0].backend_options.url", "without a scheme"),
    ({"url": "nohost"}, "models[0].backend_options.url", "not host:port"),
    ({"protocol": "udp"}, "models[0].backend_options.protocol", "'grpc' or 'http'"),
    ({"shared_memory": "cuda"}, "models[0].backend_options.shared_memory", "'auto', 'system' or 'none'"),
    ({"buffer_sets": 1}, "models[0].backend_options.buffer_sets", "greater than or equal to 2"),
    ({"deadline_ms": 0}, "models[0].backend_options.deadline_ms", "greater than 0"),
    ({"tls": {"root_certificates": "ca.pem"}}, "models[0].backend_options.tls.root_certificates", "absolute"),
    ({"tls": {"ca": "/ca.pem"}}, "models[0].backend_options.tls.ca", "allowed keys: root_certificates"),
    ({"fallback": {"backend": "triton"}}, "models[0].backend_options.fallback.backend",
     "not a local backend; allowed: onnxruntime"),
    ({"fallback": {"path": "det.onnx"}}, "models[0].backend_options.fallback.path", "absolute"),
    ({"fallback": {"recover_probes": 0}}, "models[0].backend_options.fallback.recover_probes", "greater than"),
    ({"fallback": {"backend_options": {"threads": 2}}}, "models[0].backend_options.fallback",
     "backend_options.threads: unknown key; allowed keys: providers"),
    ({"model": "yolo"}, "models[0].backend_options.model", "allowed keys: url, protocol, model_name"),
    ({"send": "png"}, "models[0].backend_options.send", "'float', 'uint8' or 'jpeg'"),
    ({"send": "jpeg", "jpeg_quality": 0}, "models[0].backend_options.jpeg_quality", "greater than or equal to 1"),
    ({"send": "jpeg", "shared_memory": "system"}, "models[0].backend_options", "send: jpeg is for a server on"),
    ({"send": "uint8", "fallback": {}}, "models[0].backend_options", "send: uint8 cannot have a fallback"),
])
def test_bad_options_name_their_key_path_and_what_is_allowed(options, path, words):
    found = problems(with_options(options))
    assert any(p.startswith(path + ":") and words in p for p in found), found


def test_check_exits_2_for_a_bad_triton_option(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(with_options({"url": "h:1", "fallback": {"backend": "tensorflow"}})))
    assert main(["check", "--no-models", str(path)]) == 2
    err = capsys.readouterr().err
    assert "models[0].backend_options.fallback.backend" in err and "tensorflow" in err


def test_config_with_triton_loads_without_tritonclient():
    # the backend module must not import tritonclient until a model is activated
    code = ("import sys, yaml; from edgeinfer.config import parse_config; "
            f"parse_config(yaml.safe_dump({BASE!r})); print('tritonclient' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_example_triton_config_is_valid(repo_root, demo_model, demo_video):
    config = repo_root / "configs" / "triton.yaml"
    assert main(["check", "--no-models", str(config)]) == 0
    model = parse_config(config.read_text()).models[0]
    assert model.backend == "triton" and model.backend_options["deadline_ms"] == model.budget_ms / 2


@pytest.mark.parametrize("url, local", [("127.0.0.1:8001", True), ("localhost:8001", True), ("[::1]:8001", True),
                                        ("127.0.1.1:8001", True), ("192.168.10.2:8001", False),
                                        ("triton.fleet.lan:8001", False)])
def test_shared_memory_auto_means_a_loopback_server(url, local):
    from edgeinfer.backends.triton_shm import server_is_local

    assert server_is_local(url) is local
