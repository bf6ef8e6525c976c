#!/bin/sh
# System packages the tests need, installed with apt-get (as root, or through sudo):
#  - GStreamer's RTSP server and H.264 encoder, run by Debian's /usr/bin/python3 through gi, to serve a camera
#    on loopback (ffmpeg cannot serve RTSP);
#  - systemd, for `systemd-analyze verify` and `systemd-analyze security` of the unit;
#  - chromium, the real headless browser that loads the http output's status page.
# Nothing is installed when everything is already there, so repeated `make test` runs stay fast.
set -eu
PACKAGES="python3 python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
gstreamer1.0-libav systemd chromium"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: apt-get not found; install the equivalents of:$missing" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "system-deps: installing$missing" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
