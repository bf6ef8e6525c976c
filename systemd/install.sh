#!/bin/sh
# Install edgeinfer as a systemd service: user and groups, venv, models, config, env file, docs, unit.
# Every step is idempotent; existing config and env files are kept.
#
#   sudo systemd/install.sh                       # from a checkout, onto this machine
#   sudo systemctl enable --now edgeinfer
#
# Options (for image builds and the tests, which cannot run systemd):
#   --prefix DIR        stage everything under DIR (users and groups in DIR/etc/passwd, DIR/etc/group)
#   --edgeinfer BIN     use this edgeinfer instead of creating /opt/edgeinfer/venv
#   --models-from DIR   copy yolov3-tiny/ and media/ from DIR instead of downloading them
set -eu

PREFIX=""
EDGE=""
MODELS_FROM=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2%/}"; shift 2 ;;
        --edgeinfer) EDGE="$2"; shift 2 ;;
        --models-from) MODELS_FROM="$2"; shift 2 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo systemd/install.sh)" >&2
    exit 1
fi
SRC=$(cd "$(dirname "$0")/.." && pwd)
STATE="$PREFIX/var/lib/edgeinfer"
ETC="$PREFIX/etc/edgeinfer"
PREFIX_OPT=""
if [ -n "$PREFIX" ]; then
    mkdir -p "$PREFIX/etc"
    for f in passwd group shadow gshadow login.defs; do
        [ -e "$PREFIX/etc/$f" ] || [ ! -e "/etc/$f" ] || cp -p "/etc/$f" "$PREFIX/etc/$f"
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

# 2. The program: its own venv under /opt (the unit's ExecStart).
if [ -z "$EDGE" ]; then
    python3 -m venv "$PREFIX/opt/edgeinfer/venv"
    "$PREFIX/opt/edgeinfer/venv/bin/pip" install --quiet "$SRC[zmq]"
    EDGE="$PREFIX/opt/edgeinfer/venv/bin/edgeinfer"
fi

# 3. Models and media in the state directory, readable by the service only.
install -d -m 0750 -o "$uid" -g "$gid" "$STATE" "$STATE/models"
if [ -n "$MODELS_FROM" ]; then
    cp -RL "$MODELS_FROM/yolov3-tiny" "$MODELS_FROM/media" "$STATE/models/"
else
    "$EDGE" models fetch yolov3-tiny --dir "$STATE/models"
    "$EDGE" models fetch bikes --dir "$STATE/models"
fi
chown -R "$uid:$gid" "$STATE/models"
find "$STATE/models" -type d -exec chmod 0750 {} +
find "$STATE/models" -type f -exec chmod 0640 {} +

# 4. Config and environment: root writes them, the service reads them (0640 root:edgeinfer).
install -d -m 0755 "$ETC"
[ -e "$ETC/config.yaml" ] || install -m 0640 -o 0 -g "$gid" "$SRC/systemd/config.yaml" "$ETC/config.yaml"
[ -e "$ETC/edgeinfer.env" ] || install -m 0640 -o 0 -g "$gid" "$SRC/systemd/edgeinfer.env.example" "$ETC/edgeinfer.env"

# 5. The unit and the README its Documentation= names.
install -D -m 0644 "$SRC/README.md" "$PREFIX/usr/share/doc/edgeinfer/README.md"
install -D -m 0644 "$SRC/systemd/edgeinfer.service" "$PREFIX/etc/systemd/system/edgeinfer.service"

# 6. Check the config as the service user sees it (not as root).
if [ -z "$PREFIX" ]; then
    "$EDGE" check --as-user edgeinfer "$ETC/config.yaml"
    systemctl daemon-reload 2>/dev/null || true
    echo "installed; start it with: sudo systemctl enable --now edgeinfer"
else
    echo "staged under $PREFIX"
fi
