"""Field hardening, round two (issue 22): the findings that a unit can show, one test per finding.

Every test here failed on commit 0ea8c00; docs/field-hardening.md lists them with the before/after behaviour.
The ones that need the daemon process are in tests/integration/test_hardening_round2.py.
"""

from __future__ import annotations

import os
import resource
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeinfer.preflight import load_config
from edgeinfer.problems import ConfigError
from edgeinfer.transports.ros import convert as cv
from edgeinfer.transports.zmq import wire as zmqwire


def png_bomb(side: int) -> bytes:
    """A valid grey PNG of side x side zero pixels: ~390 kB for 20000 x 20000 (1.2 GB once decoded to BGR)."""
    row = b"\0" * (side + 1)  # filter byte + pixels
    deflate = zlib.compressobj(9)
    parts = [deflate.compress(row * 64) for _ in range(side // 64)]
    parts += [deflate.compress(row * (side % 64)), deflate.flush()]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def test_a_png_bomb_over_zeromq_is_refused_before_decoding():
    """Before: a 1.1 MB PNG declaring 20000 x 20000 pixels was decoded (RSS to 2.49 GB)."""
    bomb = png_bomb(20000)
    header = zmqwire.encode_header("png")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(zmqwire.Malformed) as caught:
        zmqwire.decode_message([header, bomb])
    assert caught.value.reason == "too_large" and "20000x20000" in str(caught.value)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 50, f"the refused frame still cost {grown_mb:.0f} MB"
    # an ordinary camera frame still decodes, JPEG and PNG alike, and the limit is the source's to set
    from edgeinfer.imageheader import declared_size

    image = np.full((480, 640, 3), 90, np.uint8)
    for ext, encoding in ((".jpg", "jpeg"), (".png", "png")):
        data = cv2.imencode(ext, image)[1].tobytes()
        assert declared_size(data) == (640, 480)
        _, decoded = zmqwire.decode_message([zmqwire.encode_header(encoding), data])
        assert decoded.shape == (480, 640, 3)
        with pytest.raises(zmqwire.Malformed, match="max_pixels"):
            zmqwire.decode_message([zmqwire.encode_header(encoding), data], max_pixels=640 * 479)
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert declared_size(progressive) == (640, 480)


def test_a_fifo_device_or_huge_config_is_refused_without_reading_it(tmp_path):
    """Before: a FIFO config blocked the reader forever, /dev/zero and a huge file were read without bound."""
    from edgeinfer.configfile import MAX_CONFIG_BYTES, UnreadableFile, read_regular_file

    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    result: list = []
    reader = threading.Thread(target=lambda: result.append(_config_problem(fifo)), daemon=True)
    reader.start()
    reader.join(5)
    assert result and "FIFO (named pipe), not a regular file" in result[0]
    assert "character device" in _config_problem(Path("/dev/zero"))
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)  # sparse: nothing written, the size alone refuses it
    assert f"at most {MAX_CONFIG_BYTES} bytes" in _config_problem(huge)
    with pytest.raises(UnreadableFile):
        read_regular_file(tmp_path)


def _config_problem(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_lost_in_transport_is_always_present_for_ros_sources():
    """Before: /diagnostics carried lost_in_transport only once it was non-zero: a monitor could not tell
    'nothing lost' from 'not reported'."""
    stats = {"sources": {"cam": {"state": "running", "fps": 30.0, "frames": 10, "bad_frames": 0, "reconnects": 0,
                                 "lost": 0}}}
    statuses = cv.diagnostic_statuses("edgeinfer", None, stats, {}, [], True)
    name, level, _, values = next(s for s in statuses if s[0] == "edgeinfer: source cam")
    assert dict(values)["lost_in_transport"] == "0" and level == cv.OK


def _zmq_config(tmp_path: Path, curve: dict, output_curve: dict | None = None) -> Path:
    import yaml

    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read by --no-models")
    data = {"sources": [{"id": "cam", "type": "zmq", "endpoint": "tcp://127.0.0.1:5999", "curve": curve}],
            "models": [{"id": "det", "path": str(model), "sources": ["cam"]}],
            "outputs": [{"type": "zmq", "endpoint": "tcp://127.0.0.1:5998", "curve": output_curve or curve}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_curve_keys_that_others_can_read_or_write_refuse_to_start(tmp_path):
    """Before: a secret key readable by others (0644) and a world-writable (0777) clients folder were
    accepted silently."""
    pytest.importorskip("zmq")
    from edgeinfer.transports.zmq.security import make_key_pair

    keys, clients = tmp_path / "keys", tmp_path / "clients"
    _, secret = make_key_pair(keys, "server")
    robot, _ = make_key_pair(keys, "robot")
    clients.mkdir(mode=0o755)
    (clients / "robot.key").write_bytes(robot.read_bytes())
    curve = {"secret_key": str(secret), "clients": str(clients)}
    load_config(_zmq_config(tmp_path, curve))  # 0600 key, 0755 folder: fine

    secret.chmod(0o644)
    problem = _config_problem(_zmq_config(tmp_path, curve))
    assert "sources[0].curve" in problem and f"chmod 600 {secret}" in problem and "0644" in problem
    secret.chmod(0o600)
    clients.chmod(0o777)
    problem = _config_problem(_zmq_config(tmp_path, curve))
    assert "clients folder" in problem and "writable by others (mode 0777)" in problem
    clients.chmod(0o755)


def test_reset_clients_keys_must_also_be_clients(tmp_path):
    """Before: a key in reset_clients but not in clients was accepted, and that operator could never connect."""
    pytest.importorskip("zmq")
    from edgeinfer.transports.zmq.security import make_key_pair

    keys, clients, operators = tmp_path / "keys", tmp_path / "clients", tmp_path / "operators"
    _, secret = make_key_pair(keys, "server")
    robot, _ = make_key_pair(keys, "robot")
    operator, _ = make_key_pair(keys, "operator")
    clients.mkdir()
    operators.mkdir()
    (clients / "robot.key").write_bytes(robot.read_bytes())
    (operators / "operator.key").write_bytes(operator.read_bytes())
    curve = {"secret_key": str(secret), "clients": str(clients)}
    problem = _config_problem(_zmq_config(tmp_path, curve, {**curve, "reset_clients": str(operators)}))
    assert "reset_clients key(s) operator.key are not in curve.clients" in problem
    (clients / "operator.key").write_bytes(operator.read_bytes())
    load_config(_zmq_config(tmp_path, curve, {**curve, "reset_clients": str(operators)}))


def _inspect(engine: Path) -> tuple[int, str]:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "edgeinfer", "inspect", str(engine)], capture_output=True,
                          text=True, timeout=60)
    return done.returncode, done.stderr + done.stdout


def test_inspect_gives_one_clear_line_for_what_is_not_an_engine_or_manifest(tmp_path):
    """Before: a random or sparse file 'can run here' (exit 0); tampered manifests ended in tracebacks; a FIFO
    manifest hung; a 1 GiB manifest was read whole."""
    random_file = tmp_path / "random.engine"
    random_file.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    sparse = tmp_path / "sparse.engine"
    with open(sparse, "wb") as f:
        f.truncate(1 << 20)
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(100))
    for path, expected in ((random_file, "not a TensorRT engine"), (sparse, "only zero bytes"),
                           (onnx_file, "is an ONNX model")):
        code, text = _inspect(path)
        assert code == 1 and expected in text and "Traceback" not in text, text

    engine = tmp_path / "det.engine"
    engine.write_bytes(b"ftrt" + bytes(64))
    manifest = tmp_path / "det.engine.manifest.json"
    cases = {
        "not UTF-8": lambda: manifest.write_bytes(b'{"format": "\xff\xfe"}'),
        "nested too deeply": lambda: manifest.write_text("[" * 100_000 + "]" * 100_000),
        "det.engine.manifest.json: ": lambda: manifest.write_text(  # wrong types
            '{"format": "edgeinfer-engine-manifest/1", "flavour": "full", "io": 7, "profiles": "x"}'),
        "FIFO (named pipe)": lambda: os.mkfifo(manifest),
        "may be at most": lambda: open(manifest, "wb").truncate(1 << 30),  # sparse: 1 GiB, nothing written
    }
    for expected, make in cases.items():
        manifest.unlink(missing_ok=True)
        make()
        code, text = _inspect(engine)
        assert code == 1 and expected in text and "Traceback" not in text, (expected, text)
        assert len([line for line in text.splitlines() if line.strip()]) == 1, text
