"""The systemd unit: systemd's own checker accepts it, its exposure score stays low, and it keeps the
settings the daemon relies on. Needs `systemd-analyze` (Debian package `systemd`); no running systemd."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from edgeinfer.watchdog import WatchdogConfig
from edgeinfer.watchdog.config import CONFIG_ERROR_EXIT_CODE

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "edgeinfer.service"
ENV_EXAMPLE = SYSTEMD_DIR / "edgeinfer.env.example"
MAX_EXPOSURE = 2.0

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing: apt-get install systemd")


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value in order (keys such as DeviceAllow= repeat)."""
    settings: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings[section][key.strip()].append(value.strip())
    return settings


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=120)


@needs_analyze
def test_verify_passes(tmp_path):
    # `verify` also checks that ExecStart's binary is executable, and /opt/edgeinfer/venv exists only on an
    # installed robot. So verify a copy whose ExecStart names this interpreter, everything else unchanged.
    text = UNIT.read_text()
    exec_start = unit_settings(text)["Service"]["ExecStart"][0]
    binary = exec_start.split()[0]
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={binary} ", f"ExecStart={sys.executable} "))
    result = analyze("verify", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""  # not even a warning


@needs_analyze
def test_verify_of_the_original_fails_only_for_the_missing_binary():
    binary = unit_settings(UNIT.read_text())["Service"]["ExecStart"][0].split()[0]
    result = analyze("verify", str(UNIT))
    if Path(binary).exists():
        assert result.returncode == 0, result.stdout + result.stderr
        return
    output = (result.stdout + result.stderr).strip().splitlines()
    assert output == [f"{UNIT.name}: Command {binary} is not executable: No such file or directory"]


@needs_analyze
def test_security_exposure_is_low():
    result = analyze("security", "--offline=true", str(UNIT))
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_keeps_what_the_daemon_relies_on():
    service = unit_settings(UNIT.read_text())["Service"]

    def one(key: str) -> str:
        assert len(service[key]) == 1, f"{key}= set {len(service[key])} times"
        return service[key][0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("ExecStart") == "/opt/edgeinfer/venv/bin/edgeinfer run /etc/edgeinfer/config.yaml"
    assert one("EnvironmentFile") == "-/etc/edgeinfer/edgeinfer.env"
    assert one("User") == "edgeinfer"
    assert set(one("SupplementaryGroups").split()) == {"video", "render"}
    assert one("Restart") == "on-failure"
    assert str(CONFIG_ERROR_EXIT_CODE) in one("RestartPreventExitStatus").split()
    assert str(WatchdogConfig().exit_code) not in one("RestartPreventExitStatus").split()
    assert one("WatchdogSec") == "5"
    assert one("TimeoutStartSec") == "15min"  # room for a TensorRT engine build on first start
    assert one("StateDirectory") == "edgeinfer"
    assert one("LimitMEMLOCK") == "infinity"
    assert one("DevicePolicy") == "closed"
    devices = service["DeviceAllow"]
    for needed in ("char-video4linux rw", "char-nvidia* rw", "/dev/nvidiactl rw", "/dev/nvidia-uvm rw",
                   "char-nvhost* rw", "/dev/nvmap rw"):
        assert needed in devices
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("CapabilityBoundingSet", ""),
                       ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK")]:
        assert one(key) == value, key
    assert "@system-service" in service["SystemCallFilter"]
    # settings that would break CUDA stay off
    assert one("MemoryDenyWriteExecute") == "no"
    assert one("PrivateDevices") == "no"
    assert "ProcSubset" not in service


def test_env_example_holds_only_comments_and_assignments():
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        text = line.strip()
        if text and not text.startswith("#"):
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", text), f"line {number}: {line!r}"
    variables = re.findall(r"^#?([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    assert "CUDA_VISIBLE_DEVICES" in variables
    assert "NOTIFY_SOCKET" not in variables  # systemd's own, never set by hand
