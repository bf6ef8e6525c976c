"""Config of the zmq source and the CURVE settings, `edgeinfer check` on them, and `edgeinfer keys`."""

from __future__ import annotations

import stat

import pytest
import yaml

from edgeinfer.cli import main
from edgeinfer.config import ConfigError
from edgeinfer.preflight import load_config

zmq = pytest.importorskip("zmq")


def write(tmp_path, sources, outputs=None):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not checked with --no-models")
    data = {"sources": sources, "models": [{"id": "m", "path": str(model), "sources": [sources[0]["id"]]}],
            "outputs": outputs or [{"type": "jsonl", "path": "-"}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_pull_binds_sub_connects(tmp_path):
    path = write(tmp_path, [{"id": "a", "type": "zmq", "endpoint": "tcp://*:5555"},
                            {"id": "b", "type": "zmq", "endpoint": "tcp://10.0.0.2:5555", "pattern": "sub"}])
    a, b = load_config(path).sources
    assert (a.pattern, a.binds, a.protocol, a.rcvhwm) == ("pull", True, "edgeinfer", 2)
    assert (b.pattern, b.binds) == ("sub", False)


@pytest.mark.parametrize("source, words", [
    ({"pattern": "rep"}, ["sources[0]", "protocol: imagezmq"]),
    ({"endpoint": "udp://x:1"}, ["sources[0]", "must start with tcp://, ipc://"]),
    ({"endpoint": "tcp://*:5555", "pattern": "sub"}, ["sources[0]", "needs a host"]),
    ({"pattern": "dealer"}, ["sources[0].pattern", "'pull'", "'sub'", "'rep'"]),
    ({"protocol": "msgpack"}, ["sources[0].protocol", "'edgeinfer'", "'imagezmq'"]),
    ({"rcvhwm": 0}, ["sources[0].rcvhwm", "greater than or equal to 1"]),
    ({"curve": {"secret_key": "k"}}, ["sources[0].curve.clients", "required"]),
])
def test_bad_source_config_exits_2_naming_the_key(tmp_path, capsys, source, words):
    path = write(tmp_path, [{"id": "cam", "type": "zmq", "endpoint": "tcp://*:5555", **source}])
    with pytest.raises(ConfigError):
        load_config(path)
    assert main(["check", "--no-models", str(path)]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_missing_curve_files_are_config_errors_for_source_and_output(tmp_path, capsys):
    curve = {"secret_key": "keys/server.key_secret", "clients": "clients"}
    path = write(tmp_path, [{"id": "cam", "type": "zmq", "endpoint": "tcp://*:5555", "curve": curve}],
                 [{"type": "zmq", "endpoint": "tcp://*:5560", "curve": {**curve, "reset_clients": "ops"}}])
    assert main(["check", "--no-models", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"sources[0].curve: secret_key file not found: {tmp_path}/keys/server.key_secret" in err
    assert "sources[0].curve: clients folder not found" in err
    assert "outputs[0].curve: reset_clients folder not found" in err

    # with the keys made, the same config is valid
    assert main(["keys", "server", "--dir", str(tmp_path / "keys")]) == 0
    assert main(["keys", "robot", "--dir", str(tmp_path / "robot")]) == 0
    (tmp_path / "clients").mkdir()
    (tmp_path / "ops").mkdir()
    assert main(["check", "--no-models", str(path)]) == 2
    assert "holds no public key" in capsys.readouterr().err  # an empty allow-list admits nobody: say so
    (tmp_path / "clients" / "robot.key").write_bytes((tmp_path / "robot" / "robot.key").read_bytes())
    assert main(["check", "--no-models", str(path)]) == 0


def test_keys_makes_a_private_pair_and_never_overwrites_silently(tmp_path, capsys):
    assert main(["keys", "robot", "--dir", str(tmp_path)]) == 0
    public, secret = tmp_path / "robot.key", tmp_path / "robot.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub_key, _ = zmq.auth.load_certificate(str(public))
    pair_public, pair_secret = zmq.auth.load_certificate(str(secret))
    assert pub_key == pair_public and len(pair_secret) == 40  # z85 of a 32-byte key
    before = secret.read_bytes()
    assert main(["keys", "robot", "--dir", str(tmp_path)]) == 1
    assert "exists" in capsys.readouterr().err and secret.read_bytes() == before
    assert main(["keys", "robot", "--dir", str(tmp_path), "--force"]) == 0
    assert secret.read_bytes() != before


def test_zmq_modules_import_without_pyzmq_until_a_socket_is_made():
    import subprocess
    import sys

    code = ("import sys, edgeinfer.client, edgeinfer.sources, edgeinfer.transports.zmq.wire, "
            "edgeinfer.transports.zmq.security, edgeinfer.transports.zmq.source, edgeinfer.transports.zmq.output; "
            "print('zmq' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
