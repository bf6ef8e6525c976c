#!/bin/sh
# Install edgeinfer as a systemd service: user and groups, venv, models, config, env file, docs, unit.
# Every step is idempotent; existing config and env files are kept.
#
#   sudo systemd/install.sh                       # from a checkout, onto this machine
#   sudo systemctl enable --now edgeinfer
#
# Options:
#   --venv DIR          where the venv goes (default /opt/edgeinfer/venv); the unit's ExecStart follows it
#   --edgeinfer BIN     use this edgeinfer instead of creating a venv; the unit's ExecStart names BIN
#   --jetpack | --no-jetpack
#                       JetPack (Jetson): the venv sees the system's site packages (JetPack's TensorRT and its
#                       GStreamer-enabled OpenCV). Default: detected (/etc/nv_tegra_release).
#   --cuda MAJOR|none   install cuda-python matching this CUDA major version (12 on JetPack 6, 13 on JetPack 7
#                       and CUDA 13 drivers); default: detected from nvcc, the CUDA install or nvidia-smi; none
#                       found = no cuda-python (CPU only)
#   --plan              print what would be installed (program, JetPack, cuda-python) and stop
#   --models-from DIR   copy yolov3-tiny/ and media/ from DIR instead of downloading them
#   --prefix DIR        stage everything under DIR for an image (the tests do this too, as systemd cannot run
#                       here): the tree works once it sits at / (the venv's scripts name the final paths), and
#                       nothing of this machine's /etc goes into it but the edgeinfer user and groups (in
#                       DIR/etc/passwd and DIR/etc/group, created when DIR has none; an image's own files are used
#                       when DIR is its root)
set -eu

PREFIX=""
EDGE=""
VENV=/opt/edgeinfer/venv
MODELS_FROM=""
JETPACK=auto
CUDA=auto
PLAN=no
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2%/}"; shift 2 ;;
        --edgeinfer) EDGE="$2"; shift 2 ;;
        --venv) VENV="${2%/}"; shift 2 ;;
        --models-from) MODELS_FROM="$2"; shift 2 ;;
        --jetpack) JETPACK=yes; shift ;;
        --no-jetpack) JETPACK=no; shift ;;
        --cuda) CUDA="$2"; shift 2 ;;
        --plan) PLAN=yes; shift ;;
        *) echo "install.sh: unknown option $1 (see the comment at the top of this file)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ] && [ "$PLAN" = no ]; then
    echo "install.sh: run as root (sudo systemd/install.sh)" >&2
    exit 1
fi
case "$VENV" in /*) ;; *) echo "install.sh: --venv needs an absolute path (the unit names it)" >&2; exit 2 ;; esac
SRC=$(cd "$(dirname "$0")/.." && pwd)
STATE="$PREFIX/var/lib/edgeinfer"
ETC="$PREFIX/etc/edgeinfer"

# JetPack: detected from the L4T release file (in the stage when staging an image for a Jetson).
if [ "$JETPACK" = auto ]; then
    if [ -e "$PREFIX/etc/nv_tegra_release" ] || { [ -z "$PREFIX" ] && [ -e /etc/nv_tegra_release ]; }; then
        JETPACK=yes
    else
        JETPACK=no
    fi
fi

# The CUDA major version cuda-python must match (cuda-python 13 needs a driver >= 580; JetPack 6 ships CUDA 12.6).
cuda_major() {
    if [ -n "$PREFIX" ]; then  # an image: what its L4T release says, not this build machine's CUDA
        case "$(head -n 1 "$PREFIX/etc/nv_tegra_release" 2>/dev/null)" in "# R36"*) echo 12 ;; "# R38"*) echo 13 ;; esac
    elif command -v nvcc >/dev/null 2>&1; then
        nvcc --version | sed -n 's/.*release \([0-9][0-9]*\)\..*/\1/p' | head -n 1
    elif [ -r /usr/local/cuda/version.json ]; then
        sed -n 's/.*"cuda" *: *{[^}]*"version" *: *"\([0-9][0-9]*\)\..*/\1/p' /usr/local/cuda/version.json | head -n 1
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: \([0-9][0-9]*\)\..*/\1/p' | head -n 1
    elif [ -r /etc/nv_tegra_release ]; then  # L4T R36 = JetPack 6 (CUDA 12), R38 = JetPack 7 (CUDA 13)
        case "$(head -n 1 /etc/nv_tegra_release)" in "# R36"*) echo 12 ;; "# R38"*) echo 13 ;; esac
    fi
}
[ "$CUDA" = auto ] && CUDA=$(cuda_major)
[ -n "$CUDA" ] || CUDA=none
case "$CUDA" in
    none) CUDA_REQ="" ;;
    [0-9]|[0-9][0-9]) CUDA_REQ="cuda-python>=$CUDA,<$((CUDA + 1))" ;;
    *) echo "install.sh: --cuda takes a major version (12, 13) or none, not '$CUDA'" >&2; exit 2 ;;
esac
PROGRAM="$VENV/bin/edgeinfer"
[ -n "$EDGE" ] && PROGRAM="$EDGE"
if [ "$PLAN" = yes ]; then
    echo "program: $PROGRAM"
    echo "jetpack: $JETPACK (venv with system site packages: $JETPACK)"
    echo "cuda-python: ${CUDA_REQ:-none}"
    exit 0
fi

PREFIX_OPT=""
if [ -n "$PREFIX" ]; then
    # Only the account databases useradd/groupadd write, empty when the stage has none: never a copy of this
    # machine's files (its users, and its password hashes in shadow/gshadow, have no place in an image).
    mkdir -p "$PREFIX/etc"
    for f in passwd group; do
        [ -e "$PREFIX/etc/$f" ] || : > "$PREFIX/etc/$f"
    done
    PREFIX_OPT="--prefix $PREFIX"
fi

# 1. Groups the unit's SupplementaryGroups= names must exist, or the start fails with 216/GROUP
#    (Debian 12 has no `render` group without a GPU driver package).
for g in video render; do
    # shellcheck disable=SC2086
    groupadd $PREFIX_OPT --system --force "$g"
done
# shellcheck disable=SC2086
if ! grep -q '^edgeinfer:' "$PREFIX/etc/passwd"; then
    useradd $PREFIX_OPT --system --home-dir /var/lib/edgeinfer --no-create-home --shell /usr/sbin/nologin \
        --user-group --groups video,render edgeinfer
fi
uid=$(awk -F: '$1 == "edgeinfer" { print $3 }' "$PREFIX/etc/passwd")
gid=$(awk -F: '$1 == "edgeinfer" { print $3 }' "$PREFIX/etc/group")

# 2. The program: its own venv (the unit's ExecStart), built where it will run when staging is not asked for.
make_venv() {  # make_venv DIR [--system-site-packages]
    python3 -m venv "$@" 2>/dev/null && return 0
    rm -rf "$1"
    # Debian, Ubuntu and JetPack ship python3 without venv support: install it once (as `make demo` does).
    echo "install.sh: python venv support missing: installing python3-venv with apt-get" >&2
    apt-get install -y -qq python3-venv >&2 && python3 -m venv "$@" && return 0
    echo "install.sh: cannot create a venv; install python3-venv (or pass --edgeinfer BIN)" >&2
    exit 1
}
# JetPack's OpenCV (apt) is built with GStreamer, which CSI cameras (nvarguscamerasrc) need; the pip wheel the
# venv gets as a dependency is not, and it shadows the system's. Where the system's has GStreamer and the venv's
# does not, drop the wheel; JetPack 6's OpenCV is built against NumPy 1.x, so pin numpy<2 if cv2 then fails.
GST_CHECK='import re, sys, cv2; sys.exit(0 if re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()) else 1)'
prefer_system_opencv() {  # prefer_system_opencv VENV_PYTHON
    "$1" -c "$GST_CHECK" 2>/dev/null && return 0
    /usr/bin/python3 -c "$GST_CHECK" 2>/dev/null || return 0
    echo "install.sh: using JetPack's OpenCV (with GStreamer) instead of the pip wheel" >&2
    "$1" -m pip uninstall --quiet -y opencv-python-headless opencv-python >&2 || true
    "$1" -c 'import cv2' 2>/dev/null || "$1" -m pip install --quiet 'numpy<2' >&2
    "$1" -c "$GST_CHECK" || echo "install.sh: the venv still has no GStreamer OpenCV: see docs/jetson.md" >&2
}
EDGE_FINAL="$EDGE"
if [ -z "$EDGE" ]; then
    SITE=""
    [ "$JETPACK" = yes ] && SITE="--system-site-packages"
    # shellcheck disable=SC2086
    make_venv "$PREFIX$VENV" $SITE
    PIP_PROGRESS="--progress-bar=off"
    [ -t 2 ] && PIP_PROGRESS=""
    # shellcheck disable=SC2086
    "$PREFIX$VENV/bin/pip" install --quiet $PIP_PROGRESS "$SRC[zmq]" ${CUDA_REQ:+"$CUDA_REQ"}
    if [ -n "$PREFIX" ]; then
        # The venv's scripts (shebangs, activate) and pyvenv.cfg name the stage; name the final path instead,
        # or the booted image fails with 203/EXEC.
        grep -rlI -F "$PREFIX$VENV" "$PREFIX$VENV/bin" "$PREFIX$VENV/pyvenv.cfg" | while IFS= read -r f; do
            sed -i "s|$PREFIX$VENV|$VENV|g" "$f"
        done
    fi
    EDGE="$PREFIX$VENV/bin/edgeinfer"
    EDGE_FINAL="$VENV/bin/edgeinfer"
    [ "$JETPACK" = yes ] && [ -z "$PREFIX" ] && prefer_system_opencv "$VENV/bin/python"
fi
# Run the freshly staged program through its own interpreter (its shebang names the final path now).
run_edgeinfer() {
    if [ -n "$PREFIX" ] && [ "$EDGE" = "$PREFIX$VENV/bin/edgeinfer" ]; then
        "$PREFIX$VENV/bin/python" -m edgeinfer "$@"
    else
        "$EDGE" "$@"
    fi
}

# 3. Models and media in the state directory, readable by the service only.
install -d -m 0750 -o "$uid" -g "$gid" "$STATE" "$STATE/models"
if [ -n "$MODELS_FROM" ]; then
    cp -RL "$MODELS_FROM/yolov3-tiny" "$MODELS_FROM/media" "$STATE/models/"
else
    run_edgeinfer models fetch yolov3-tiny --dir "$STATE/models"
    run_edgeinfer models fetch bikes --dir "$STATE/models"
fi
chown -R "$uid:$gid" "$STATE/models"
find "$STATE/models" -type d -exec chmod 0750 {} +
find "$STATE/models" -type f -exec chmod 0640 {} +

# 4. Config and environment: root writes them, the service reads them (0640 root:edgeinfer).
install -d -m 0755 "$ETC"
[ -e "$ETC/config.yaml" ] || install -m 0640 -o 0 -g "$gid" "$SRC/systemd/config.yaml" "$ETC/config.yaml"
[ -e "$ETC/edgeinfer.env" ] || install -m 0640 -o 0 -g "$gid" "$SRC/systemd/edgeinfer.env.example" "$ETC/edgeinfer.env"

# 5. The unit (ExecStart naming the program chosen above) and the README its Documentation= names.
install -D -m 0644 "$SRC/README.md" "$PREFIX/usr/share/doc/edgeinfer/README.md"
install -d -m 0755 "$PREFIX/usr/share/doc/edgeinfer/docs"  # the README's links point here
install -m 0644 "$SRC"/docs/*.md "$PREFIX/usr/share/doc/edgeinfer/docs/"
install -d -m 0755 "$PREFIX/etc/systemd/system"
sed "s|^ExecStart=/opt/edgeinfer/venv/bin/edgeinfer |ExecStart=$EDGE_FINAL |" "$SRC/systemd/edgeinfer.service" \
    > "$PREFIX/etc/systemd/system/edgeinfer.service.tmp"
chmod 0644 "$PREFIX/etc/systemd/system/edgeinfer.service.tmp"
mv "$PREFIX/etc/systemd/system/edgeinfer.service.tmp" "$PREFIX/etc/systemd/system/edgeinfer.service"

echo "install.sh: program $EDGE_FINAL; JetPack: $JETPACK; cuda-python: ${CUDA_REQ:-none}" >&2
# 6. Check the config as the service user sees it (not as root).
if [ -z "$PREFIX" ]; then
    "$EDGE" check --as-user edgeinfer "$ETC/config.yaml"
    systemctl daemon-reload 2>/dev/null || true
    echo "installed; start it with: sudo systemctl enable --now edgeinfer"
else
    echo "staged under $PREFIX"
fi
