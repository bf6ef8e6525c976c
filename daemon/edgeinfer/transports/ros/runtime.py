"""The one rclpy context, node and executor that every ROS source and output of a pipeline shares.

The pipeline creates it lazily (only when a `ros2` plugin is configured), hands it to those plugins, and
closes it after them. rclpy is imported here, at `start()`, never at module import. The executor spins on its
own thread; plugins create their publishers, subscriptions, services and timers on `node`.

Lifecycle: where rclpy has managed nodes (and `ros.lifecycle` is not off) the node is a LifecycleNode. The
daemon has loaded and warmed up its models before the node exists, so `configure` only checks that, and
`activate` / `deactivate` switch publishing of detections and images on and off (heartbeat and /diagnostics
keep going: a supervisor must hear a paused node). With `autostart` the daemon configures and activates the
node itself once everything runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ...lazy import MissingDependency, lazy_import
from . import INSTALL_HINT
from .schema import RosConfig

log = logging.getLogger(__name__)

# ROS arguments (`--ros-args -p ... -r __ns:=...`) given to the process; set by the edgeinfer_ros entry point
ROS_ARGS: list[str] | None = None


class RosRuntime:
    def __init__(self, config: RosConfig, stats: Callable[[], dict[str, Any]] | None = None,
                 backends: Callable[[], dict[str, tuple[str, str]]] | None = None):
        self.config = config
        self.stats = stats or (lambda: {})  # the pipeline's stats, for /diagnostics
        self.backends = backends or (lambda: {})  # model id -> (backend description, configured device)
        self.rclpy: Any = None
        self.context: Any = None
        self.node: Any = None
        self.executor: Any = None
        self.managed = False
        self.active = threading.Event()  # detections and images are published only while set
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.node.get_fully_qualified_name() if self.node is not None else self.config.node_name

    def start(self) -> None:
        rclpy = self.rclpy = lazy_import("rclpy", INSTALL_HINT)
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        self.context.init(args=ROS_ARGS)
        kwargs = {"context": self.context, "namespace": self.config.namespace or None}
        node_class = self._lifecycle_class() if self.config.lifecycle != "off" else None
        if node_class is None and self.config.lifecycle == "on":
            self.context.try_shutdown()
            raise MissingDependency("ros.lifecycle: on, but this rclpy has no lifecycle support (rclpy.lifecycle);"
                                    " use lifecycle: auto or off")
        if node_class is not None:
            self.node = node_class(self, self.config.node_name, **kwargs)
            self.managed = True
        else:
            self.node = rclpy.create_node(self.config.node_name, **kwargs)
            self.active.set()
        # one thread is enough: every callback here is short (store a message, fill a message, flip a flag)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="ros-executor", daemon=True)
        self._thread.start()
        log.info("ros: node %s (%s) on ROS_DOMAIN_ID %s", self.name, "lifecycle" if self.managed else "plain",
                 self.context.get_domain_id())

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception as exc:  # ExternalShutdownException at close, or a callback bug: say which
            if self.context is not None and self.context.ok():
                log.exception("ros: executor stopped: %s", exc)

    def _lifecycle_class(self) -> Any:
        try:
            from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
        except ImportError:
            return None

        class EdgeinferLifecycleNode(LifecycleNode):
            """configure: models are loaded and warm already; activate/deactivate: publishing on/off."""

            def __init__(self, runtime: RosRuntime, name: str, **kw: Any):
                self._runtime = runtime
                super().__init__(name, **kw)

            def on_configure(self, state: Any) -> Any:
                return TransitionCallbackReturn.SUCCESS

            def on_activate(self, state: Any) -> Any:
                self._runtime.active.set()
                log.info("ros: lifecycle activate: publishing detections")
                return super().on_activate(state)

            def on_deactivate(self, state: Any) -> Any:
                self._runtime.active.clear()
                log.info("ros: lifecycle deactivate: detections paused (heartbeat and diagnostics go on)")
                return super().on_deactivate(state)

            def on_cleanup(self, state: Any) -> Any:
                self._runtime.active.clear()
                return TransitionCallbackReturn.SUCCESS

            def on_shutdown(self, state: Any) -> Any:
                self._runtime.active.clear()
                return TransitionCallbackReturn.SUCCESS

        return EdgeinferLifecycleNode

    def ready(self) -> None:
        """Everything runs (models warm, sources started): a managed node with autostart goes active."""
        if self.managed and self.config.autostart:
            self.node.trigger_configure()
            self.node.trigger_activate()

    def close(self) -> None:
        if self.context is None:
            return
        self.active.clear()
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=1.0)
        if self.node is not None:
            try:
                self.node.destroy_node()
            except Exception as exc:  # closing must not hide why we are closing
                log.warning("ros: destroying the node failed: %s", exc)
        self.context.try_shutdown()
        if self._thread is not None:
            self._thread.join(1.0)
        self.context = self.node = self.executor = None


def qos_profile(spec: Any) -> Any:
    """An rclpy QoSProfile from a QosConfig."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability, durability, depth = spec.resolved()
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if durability == "transient_local"
                    else DurabilityPolicy.VOLATILE),
    )


def policy_name(info: Any) -> str:
    """The QoS policy an incompatible-QoS event names (DURABILITY, RELIABILITY, ...)."""
    from rclpy.event_handler import qos_policy_name_from_kind

    try:
        return str(qos_policy_name_from_kind(info.last_policy_kind))
    except Exception:  # an unknown kind must still be reported
        return f"policy {getattr(info, 'last_policy_kind', '?')}"
