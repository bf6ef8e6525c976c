#!/bin/sh
# ROS 2 for the tests, from PyPI (ROS 2 Kilted wheels; no apt repository of ROS is needed):
#  1. the ros-* runtime wheels, colcon and the ament/rosidl build tools into the venv (pyproject extras
#     `ros` and `ros-build`);
#  2. two include paths the wheels' CMake exports name (the wheel builder's /opt/python/cp311-cp311 layout),
#     linked to this venv's Python and numpy headers, so generated interface packages compile;
#  3. `colcon build` of ros2_ws (edgeinfer_msgs, edgeinfer_ros) and of the test-only vision_msgs fixture
#     (tests/fixtures/ros, kept out of ros2_ws so it never shadows the real vision_msgs on a robot) into the
#     git-ignored folder .ros/ (merged install: .ros/install).
# The wheels are built for CPython 3.11 on x86_64/aarch64 Linux; elsewhere this says so and the ROS tests skip.
set -eu
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
OUT=.ros

if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "ros: the ROS 2 wheels on PyPI are built for Python 3.11; $("$PY" --version) here: ROS tests will skip" >&2
    exit 0
fi
"$PY" -m pip install --quiet -e '.[ros,ros-build]'

link() {  # link TARGET NAME: create NAME -> TARGET unless NAME already resolves
    [ -e "$2" ] && return 0
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO mkdir -p "$(dirname "$2")"
    $SUDO ln -sfn "$1" "$2"
}
INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$PY" -c 'import numpy; print(numpy.get_include())')
link "$INC" /opt/python/cp311-cp311/include/python3.11
link "$NPINC" /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include

PREFIX=$(cd "$VENV" && pwd)
PYEXE="$PREFIX/bin/python"
export CMAKE_PREFIX_PATH="$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export AMENT_PREFIX_PATH="$PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$PREFIX/bin:$PATH"
"$PREFIX/bin/colcon" --log-base "$OUT/log" build --merge-install \
    --base-paths ros2_ws/src tests/fixtures/ros \
    --build-base "$OUT/build" --install-base "$OUT/install" \
    --event-handlers console_direct- console_cohesion- summary+ \
    --cmake-args -DPython3_EXECUTABLE="$PYEXE" -DBUILD_TESTING=OFF
touch "$OUT/.built"
