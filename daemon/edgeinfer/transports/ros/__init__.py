"""ROS 2 support: one shared rclpy context, node and executor (runtime.py) handed by the pipeline to the
`ros2` source and output plugins; message contents built by pure functions (convert.py) testable without ROS.
Nothing here imports rclpy at module import time."""

INSTALL_HINT = ("Source your ROS 2 setup (`source /opt/ros/<distro>/setup.bash`) or, without ROS, install the "
                "ROS 2 Kilted wheels: pip install '.[ros]' from the edgeinfer checkout (CPython 3.11).")
INTERFACES_HINT = ("Build the interface packages: on a robot `colcon build` ros2_ws (edgeinfer_msgs) and install "
                   "ros-<distro>-vision-msgs; here `make ros` builds both into .ros/install (then source "
                   ".ros/install/setup.sh).")
