"""The safety watchdog: a deterministic supervisor (alive / deadline / logical supervision in whole cycles
of a fixed period on the monotonic clock) and systemd integration (sd_notify, watchdog pings).

See `supervisor` for the exact semantics of every transition.
"""

from .config import (
    ALL_SAFE_STOP_ACTIONS,
    EntitySpec,
    SafeStopAction,
    WatchdogConfig,
    build_specs,
    cycles_for,
    flow_id,
)
from .sd_notify import SystemdNotifier
from .supervisor import (
    EntityState,
    EntityStatus,
    Event,
    GlobalState,
    Snapshot,
    Supervisor,
    SupervisorCore,
    Transition,
)

__all__ = [
    "ALL_SAFE_STOP_ACTIONS",
    "EntitySpec",
    "EntityState",
    "EntityStatus",
    "Event",
    "GlobalState",
    "SafeStopAction",
    "Snapshot",
    "Supervisor",
    "SupervisorCore",
    "SystemdNotifier",
    "Transition",
    "WatchdogConfig",
    "build_specs",
    "cycles_for",
    "flow_id",
]
