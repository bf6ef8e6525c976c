"""The robot-side ZeroMQ sender, kept importable as `edgeinfer.client` for robots written against 0.1; it
lives in `edgeinfer.transports.zmq.client`."""

from .transports.zmq.client import *  # noqa: F403
from .transports.zmq.client import __all__  # noqa: F401
