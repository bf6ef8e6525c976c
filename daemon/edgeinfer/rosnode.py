"""The edgeinfer_ros node's entry point (a variant of the command line): ROS parameters -> `edgeinfer run`.

`config_file` (required) names the daemon's YAML config, `max_frames` (0: none) stops after that many
published frames. The ROS arguments (`--ros-args -r __ns:=/robot1 -r __node:=cam_detector ...`) are kept for
the node the daemon creates, so remaps, namespace and parameters given to the launch file apply to it.
"""

from __future__ import annotations

import sys

from .cli import main as cli_main
from .lazy import lazy_import
from .transports.ros import INSTALL_HINT, runtime


def read_parameters(argv: list[str]) -> tuple[dict, list[str]]:
    """The node's parameters (config_file, max_frames) from the ROS arguments, and the other arguments."""
    rclpy = lazy_import("rclpy", INSTALL_HINT)
    from rclpy.utilities import remove_ros_args

    context = rclpy.Context()
    context.init(args=argv)
    try:
        # the same node name the daemon will use, so a params file keyed by it (or remapped __node) applies
        node = rclpy.create_node("edgeinfer", context=context, start_parameter_services=False)
        try:
            node.declare_parameter("config_file", "")
            node.declare_parameter("max_frames", 0)
            params = {"config_file": node.get_parameter("config_file").value,
                      "max_frames": node.get_parameter("max_frames").value,
                      "node_name": node.get_name(), "namespace": node.get_namespace()}
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()
    return params, remove_ros_args(args=argv)[1:]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    params, rest = read_parameters(argv)
    if rest:
        sys.stderr.write(f"edgeinfer_node: unexpected arguments {rest}; pass settings as ROS parameters "
                         f"(--ros-args -p config_file:=/path/config.yaml)\n")
        return 2
    if not params["config_file"]:
        sys.stderr.write("edgeinfer_node: the ROS parameter config_file is not set "
                         "(--ros-args -p config_file:=/path/config.yaml, or params.yaml)\n")
        return 2
    runtime.ROS_ARGS = argv  # remaps, namespace and parameters reach the daemon's node
    args = ["run", str(params["config_file"])]
    if params["max_frames"]:
        args += ["--max-frames", str(int(params["max_frames"]))]
    return cli_main(args)
