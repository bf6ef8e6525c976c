"""Transports: the ways frames come in and results go out besides files, one package each.

`zmq/` (wire format, CURVE security, the `zmq` source and output, the robot-side client) and `ros/` (the shared
rclpy runtime, message conversion, the `ros2` source and output). Nothing here imports pyzmq or rclpy at module
import time.
"""
