"""`ros2 run edgeinfer_ros edgeinfer_node --ros-args -p config_file:=/etc/edgeinfer/config.yaml`

A thin entry point: the node itself lives in the edgeinfer package (edgeinfer.transports.ros), which must be
installed in the Python environment ROS uses (see docs/robot.md)."""

import sys


def main(argv=None):
    try:
        from edgeinfer.rosnode import main as run
    except ImportError as exc:
        sys.stderr.write(f"edgeinfer_node: the edgeinfer Python package is not importable ({exc}); install it "
                         f"with `pip install /path/to/edgeinfer` in the environment ROS uses\n")
        return 1
    return run(sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
