"""The systemd install steps, run for real into a staging root (systemd itself cannot run here).

Before (issue 8): the steps installed configs/demo.yaml, whose model paths do not exist under /etc/edgeinfer;
`useradd` omitted the groups the unit needs and Debian 12 has no `render` group (exit 216/GROUP); the unit's
Documentation= named a file no step installed; the env file was 0644 in one place and 0640 in another; and
`sudo edgeinfer check` checked as root, not as the service user.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "systemd" / "install.sh"
EDGE = Path(sys.executable).parent / "edgeinfer"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="the install steps need root and shadow-utils (useradd --prefix)")


def unit_value(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith(f"{key}=")]


def table(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.rstrip("\n").split(":") for line in path.read_text().splitlines() if line}


@pytest.fixture(scope="module")
def staged(tmp_path_factory, demo_model, demo_video) -> Path:
    prefix = tmp_path_factory.mktemp("root")
    done = subprocess.run(["sh", str(SCRIPT), "--prefix", str(prefix), "--edgeinfer", str(EDGE),
                           "--models-from", str(demo_model.onnx.parent.parent)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return prefix


def test_user_and_every_group_the_unit_needs_exist(staged):
    unit = (staged / "etc/systemd/system/edgeinfer.service").read_text()
    passwd, group = table(staged / "etc/passwd"), table(staged / "etc/group")
    user = unit_value(unit, "User")[0]
    assert passwd[user][5] == "/var/lib/edgeinfer" and passwd[user][6] == "/usr/sbin/nologin"
    assert unit_value(unit, "Group")[0] in group
    for name in unit_value(unit, "SupplementaryGroups")[0].split():
        assert name in group, f"SupplementaryGroups={name} does not exist: the start would fail with 216/GROUP"
        assert user in group[name][3].split(","), f"{user} is not in group {name}"
    assert "edgeinfer" not in table(Path("/etc/passwd"))  # staging touched nothing of this machine


def test_documentation_and_files_are_where_the_unit_says(staged):
    unit = (staged / "etc/systemd/system/edgeinfer.service").read_text()
    for doc in unit_value(unit, "Documentation")[0].split():
        assert doc.startswith("file://") and (staged / doc.removeprefix("file:///")).is_file(), doc
    config = unit_value(unit, "ExecStart")[0].split()[-1]
    assert (staged / config.lstrip("/")).is_file()
    env = unit_value(unit, "EnvironmentFile")[0].lstrip("-")
    assert (staged / env.lstrip("/")).is_file()


def test_modes_and_owners(staged):
    uid = int(table(staged / "etc/passwd")["edgeinfer"][2])
    gid = int(table(staged / "etc/group")["edgeinfer"][2])

    def mode_owner(path: Path) -> tuple[int, int, int]:
        st = path.stat()
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    assert mode_owner(staged / "etc/edgeinfer/config.yaml") == (0o640, 0, gid)
    assert mode_owner(staged / "etc/edgeinfer/edgeinfer.env") == (0o640, 0, gid)
    assert mode_owner(staged / "var/lib/edgeinfer") == (0o750, uid, gid)
    onnx = staged / "var/lib/edgeinfer/models/yolov3-tiny/yolov3-tiny.onnx"
    assert mode_owner(onnx) == (0o640, uid, gid)
    # the unit's comment, the script and the README agree on the env file's mode
    readme = (ROOT / "README.md").read_text()
    assert "0644 systemd/edgeinfer.env" not in readme and "systemd/install.sh" in readme


def test_the_installed_config_names_files_the_service_can_reach(staged, tmp_path):
    unit = (staged / "etc/systemd/system/edgeinfer.service").read_text()
    assert unit_value(unit, "ProtectSystem") == ["strict"] and unit_value(unit, "StateDirectory") == ["edgeinfer"]
    text = (staged / "etc/edgeinfer/config.yaml").read_text()
    data = yaml.safe_load(text)
    paths = [s["path"] for s in data["sources"] if "path" in s]
    paths += [m[k] for m in data["models"] for k in ("path", "labels") if k in m]
    for path in paths:
        assert path.startswith("/var/lib/edgeinfer/"), f"{path}: outside the StateDirectory the unit can read"
        assert (staged / path.lstrip("/")).is_file(), path
    staged_config = tmp_path / "config.yaml"
    staged_config.write_text(text.replace("/var/lib/edgeinfer/", f"{staged}/var/lib/edgeinfer/"))
    done = subprocess.run([str(EDGE), "check", str(staged_config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_check_as_user_sees_what_that_user_sees(staged):
    # a config `nobody` can read, naming models in the staged 0750 state directory, which it cannot: root's
    # own check passes (previous test), the check as that user must not
    folder = Path(tempfile.mkdtemp(prefix="edgeinfer-check-", dir="/tmp"))
    try:
        os.chmod(folder, 0o755)
        config = folder / "config.yaml"
        text = (staged / "etc/edgeinfer/config.yaml").read_text()
        config.write_text(text.replace("/var/lib/edgeinfer/", f"{staged}/var/lib/edgeinfer/"))
        os.chmod(config, 0o644)
        done = subprocess.run([str(EDGE), "check", "--no-models", "--as-user", "nobody", str(config)],
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(folder)
    assert done.returncode == 2, done.stderr
    assert "checking as user nobody" in done.stderr and "models[0].path" in done.stderr, done.stderr
    assert "no permission" in done.stderr or "Permission denied" in done.stderr, done.stderr
    missing = subprocess.run([str(EDGE), "check", "--as-user", "no-such-user-here", "x.yaml"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no such user" in missing.stderr


def test_running_it_again_keeps_an_edited_config(staged, demo_model):
    config = staged / "etc/edgeinfer/config.yaml"
    config.write_text(config.read_text() + "# edited\n")
    done = subprocess.run(["sh", str(SCRIPT), "--prefix", str(staged), "--edgeinfer", str(EDGE),
                           "--models-from", str(demo_model.onnx.parent.parent)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert config.read_text().endswith("# edited\n")


def test_the_unit_raises_the_open_files_limit_and_reloads_with_sighup(staged):
    unit = (staged / "etc/systemd/system/edgeinfer.service").read_text()
    assert int(unit_value(unit, "LimitNOFILE")[0]) >= 65536
    assert unit_value(unit, "ExecReload") == ["/bin/kill -HUP $MAINPID"]
