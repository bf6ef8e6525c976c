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


# -- a staged venv that works at its final path (issue 20) -----------------------------------------------------
# Before: --prefix built the venv in the stage, so its scripts' shebangs named the stage (203/EXEC once the image
# booted); the stage received copies of this machine's /etc/shadow and /etc/gshadow; --edgeinfer did not change
# the unit's hard-coded ExecStart; the venv could not see JetPack's TensorRT (no --system-site-packages).

STAGE_ETC_ALLOWED = {"passwd", "group", "passwd-", "group-",  # the edgeinfer user and groups (useradd's backups)
                     "nv_tegra_release",  # the image's own (the test's stage poses as a JetPack 6 root)
                     "edgeinfer/config.yaml", "edgeinfer/edgeinfer.env", "systemd/system/edgeinfer.service"}


@pytest.fixture(scope="module")
def staged_venv(tmp_path_factory, demo_model) -> Path:
    prefix = tmp_path_factory.mktemp("image")
    (prefix / "etc").mkdir()
    (prefix / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic\n")
    done = subprocess.run(["sh", str(SCRIPT), "--prefix", str(prefix), "--cuda", "none",
                           "--models-from", str(demo_model.onnx.parent.parent)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return prefix


def in_private_mounts(stage: Path, command: str) -> subprocess.CompletedProcess:
    """Run `command` with the stage's /opt mounted at /opt in a mount namespace of its own: the staged tree at its
    final path, this machine's /opt untouched (outside the namespace nothing changes)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the staged venv's own edgeinfer
    return subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {stage}/opt /opt && {command}"],
                          capture_output=True, text=True, timeout=120, env=env)


def test_the_staged_unit_verifies_and_its_exec_start_runs_at_the_final_path(staged_venv):
    unit_path = staged_venv / "etc/systemd/system/edgeinfer.service"
    exec_start = unit_value(unit_path.read_text(), "ExecStart")[0].split()
    assert exec_start[0] == "/opt/edgeinfer/venv/bin/edgeinfer"
    program = staged_venv / exec_start[0].lstrip("/")
    assert program.is_file() and os.access(program, os.X_OK)
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespaces here (unshare -m): the staged tree cannot be put at its final path")
    verified = in_private_mounts(staged_venv, f"systemd-analyze verify {unit_path}")
    assert verified.returncode == 0, verified.stderr
    ran = in_private_mounts(staged_venv, "/opt/edgeinfer/venv/bin/edgeinfer --version && "
                            "/opt/edgeinfer/venv/bin/python -c 'import edgeinfer, zmq; print(edgeinfer.__file__)'")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("edgeinfer ") and "/opt/edgeinfer/venv/lib/" in ran.stdout


def test_the_venv_names_the_final_path_not_the_stage(staged_venv):
    venv = staged_venv / "opt/edgeinfer/venv"
    scripts = [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    shebangs = {p.name: p.read_bytes().split(b"\n", 1)[0] for p in scripts if p.read_bytes().startswith(b"#!")}
    assert "edgeinfer" in shebangs and "pip" in shebangs
    for name, line in shebangs.items():
        assert line.startswith(b"#!/opt/edgeinfer/venv/bin/python"), (name, line)
    for path in [*scripts, venv / "pyvenv.cfg"]:
        assert str(staged_venv).encode() not in path.read_bytes(), f"{path} names the stage"
    # JetPack detected from the image's L4T release: the venv sees the system's TensorRT and OpenCV
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()


def test_nothing_of_this_machines_etc_goes_into_the_stage(staged_venv):
    files = {str(p.relative_to(staged_venv / "etc")) for p in (staged_venv / "etc").rglob("*") if p.is_file()}
    assert files <= STAGE_ETC_ALLOWED, files - STAGE_ETC_ALLOWED
    assert not (staged_venv / "etc/shadow").exists() and not (staged_venv / "etc/gshadow").exists()
    assert set(table(staged_venv / "etc/passwd")) == {"edgeinfer"}  # no account of this machine
    assert set(table(staged_venv / "etc/group")) == {"edgeinfer", "video", "render"}


def test_exec_start_follows_a_chosen_program(staged):
    unit = (staged / "etc/systemd/system/edgeinfer.service").read_text()
    assert unit_value(unit, "ExecStart") == [f"{EDGE} run /etc/edgeinfer/config.yaml"]


@pytest.mark.parametrize("release,site,cuda", [
    ("# R36 (release), REVISION: 4.0", "yes", "cuda-python>=12,<13"),  # JetPack 6: CUDA 12.6
    ("# R38 (release), REVISION: 2.0", "yes", "cuda-python>=13,<14"),  # JetPack 7: CUDA 13
    (None, "no", "none"),  # an image that is not a Jetson: no CUDA known for it
])
def test_the_plan_fits_the_box(tmp_path, release, site, cuda):
    (tmp_path / "etc").mkdir()
    if release:
        (tmp_path / "etc/nv_tegra_release").write_text(release + "\n")
    done = subprocess.run(["sh", str(SCRIPT), "--plan", "--prefix", str(tmp_path), "--venv", "/srv/edgeinfer"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["program: /srv/edgeinfer/bin/edgeinfer",
                                        f"jetpack: {site} (venv with system site packages: {site})",
                                        f"cuda-python: {cuda}"]
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == (["nv_tegra_release"] if release else [])


def test_csi_cameras_reach_the_argus_socket_under_the_unit(staged):
    unit = (staged / "etc/systemd/system/edgeinfer.service").read_text()
    assert unit_value(unit, "PrivateTmp") == ["yes"]
    assert "-/tmp/argus_socket" in unit_value(unit, "BindPaths")  # bound into the private /tmp
    assert "nvargus-daemon.service" in " ".join(unit_value(unit, "After"))
