"""Launch the edgeinfer node: `ros2 launch edgeinfer_ros edgeinfer.launch.py config_file:=/path/config.yaml`."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("edgeinfer_ros")
    return LaunchDescription([
        DeclareLaunchArgument("config_file", default_value=os.path.join(share, "config", "edgeinfer.yaml"),
                              description="edgeinfer daemon config (sources, models, outputs, watchdog)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "params.yaml")),
        DeclareLaunchArgument("namespace", default_value=""),
        Node(
            package="edgeinfer_ros",
            executable="edgeinfer_node",
            name="edgeinfer",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            # the daemon handles SIGINT/SIGTERM itself and stops within 2 s
            parameters=[LaunchConfiguration("params_file"),
                        {"config_file": LaunchConfiguration("config_file")}],
        ),
    ])
