"""The deterministic safety supervisor: alive, deadline and logical supervision in whole cycles.

`SupervisorCore` holds every decision and nothing else: no threads, no clocks. It is a pure function of the
reported events and the cycle count, so tests replay event lists and assert the exact cycle of each
transition. `Supervisor` wraps it with a lock, the monotonic clock, a ticking thread and sd_notify.

Timeline (P = period_ms, t0 = start time on the monotonic clock)
  Cycle k covers [t0 + k*P, t0 + (k+1)*P). Every report made during it is tagged k; the step of cycle k
  runs when the cycle is over, scheduled by absolute deadlines (no drift). A supervisor that wakes late
  catches up one step per missed cycle, and reports keep the cycle in which they were made, so a scheduling
  hiccup of the supervisor never looks like a stalled camera.

Checks, runs and tolerances
  Each entity has up to four checks; a check either passes or fails at each step. Its "run" counts
  consecutive failing steps. A check's tolerance t (from WatchdogConfig) has the meaning of AUTOSAR's
  watchdog manager: the number of failed cycles tolerated before EXPIRED. The check is
      OK       run == 0
      FAILED   1 <= run <= t
      EXPIRED  run >= t + 1
  i.e. first failing at cycle k -> FAILED at k .. k + t - 1, EXPIRED at k + t if it is still failing there;
  with t = 0 the first failing step is already EXPIRED (no FAILED step in between). One passing step brings
  the run back to 0. The entity's status is the worst of its checks.

  alive (alive_cycles A, tolerance alive_tolerance_cycles)
      `alive` or `end` reported at cycle c marks the entity alive at c. The check fails at step k when
      k - L > A, L being the last alive cycle; supervision starts as if alive at cycle G - 1, G being the
      start-up grace in cycles (startup_grace_ms / P rounded up; a camera may take seconds to open), and
      at r - 1 after a reset taking effect at step r. Last alive at L: first failing at L + A + 1, so FAILED at
      L + A + 1 (for t >= 1) and EXPIRED at L + A + 1 + t. One violation is counted per stall (each time
      the check starts failing).
  deadline (deadline_cycles D = budget / P rounded up, tolerance deadline_tolerance_cycles)
      `begin` at cycle b opens work; each `end` closes the oldest open work (two inferences may be in
      flight). Each overdue piece of work is one violation. An `end` with nothing open is counted as a
      fault. `open_since_cycle` (heartbeat) is the earliest begin cycle of the work still open, else None.
      Hung work: work still open at step k with k - b >= D makes that step fail - a hung inference fails
      at the step of cycle b + D and at every step after it while it hangs, so with tolerance t it is
      EXPIRED at the step of b + D + t. When the step of b + D runs (at t0 + (b+D+1)*P) the begin is more
      than D*P >= budget ago, because it happened before the end of cycle b: work is never flagged before
      its budget has run out. And it is at most (D+1)*P ago: with tolerance 0 a hung safety-relevant model is SAFE_STOP
      within (D+1)*P of its begin, which is budget + one period when the budget is a multiple of P (less
      than budget + two periods otherwise), as long as the supervisor steps on time.
      Late end: an `end` at cycle e with e - b > D, for work not yet counted as overdue, makes the step
      that receives it fail. Such an end came more than D*P >= budget after its begin, so completed work
      never raises a false alarm; an end at e = b + D is in time although it may come almost (D+1)*P after
      its begin, so an overrun of less than one period beyond D*P goes unnoticed. Live, every event
      reaches the step of its own cycle, so work ending at e > b + D was already open - and counted - at
      the step of b + D; this rule catches the overrun when events arrive late (replayed logs).
  logical (flow entities, `<model>/flow`, tolerance logical_tolerance_cycles)
      `checkpoint(model, point, token)` with point capture -> infer -> publish. A step fails when one of
      its checkpoints is a violation: infer of a token never captured, publish of a token never inferred,
      a token (source, seq) whose seq is lower than the last seq seen at the same point for that source,
      or an unknown point. Memory is bounded (the last FLOW_MEMORY tokens per point and source).
  fault (every entity, tolerance fault_tolerance_cycles)
      A step fails when at least one `fault` was reported for the entity since the previous step.

Recovery (hysteresis)
  An entity under alive supervision that was FAILED or EXPIRED comes back to OK only once it has shown
  progress (`alive` or `end`) in a cycle after its last failing step; until then it keeps the status it had
  (its runs are back to 0, so it does not get worse either). A camera that cannot open reports a fault on every
  reconnect attempt with clean cycles in between: without this rule it read OK between attempts and the log
  flapped OK -> DEGRADED -> OK; with it, it reads DEGRADED until it really delivers frames again. Entities
  without alive supervision (a model reading files) recover at the first passing step. `reset()` clears holds.

Global state, latching and reset
  SAFE_STOP if a safety-relevant entity is EXPIRED; else FAULT if one is FAILED; else DEGRADED if any
  other entity is not OK; else OK. With latch_safe_stop, a safety-relevant entity that reached EXPIRED
  stays EXPIRED (so the state stays SAFE_STOP) until `reset()`; other entities always recover. `reset()`
  takes effect at the next step: it clears latches and runs and restarts alive windows; work that is still
  open stays overdue (a hung inference is found again at once). Cumulative counters are kept.

Events for unknown entities are counted (`unknown_events`) and otherwise ignored.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Literal

from ..logutil import RateLimitedLog
from .config import EntitySpec, WatchdogConfig, flow_id
from .sd_notify import SystemdNotifier

log = logging.getLogger(__name__)

FLOW_MEMORY = 256  # tokens remembered per point, and sources remembered per point, for each flow entity
MAX_OPEN_WORK = 64  # more unfinished `begin`s than this is a reporting bug, counted as a fault
MAX_MESSAGE = 200  # characters of a fault / violation message kept for the heartbeat
CHECKPOINTS = ("capture", "infer", "publish")


class EntityState(str, Enum):
    OK = "OK"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"


class GlobalState(str, Enum):
    OK = "OK"
    DEGRADED = "DEGRADED"
    FAULT = "FAULT"
    SAFE_STOP = "SAFE_STOP"


_SEVERITY = {EntityState.OK: 0, EntityState.FAILED: 1, EntityState.EXPIRED: 2}

EventKind = Literal["alive", "begin", "end", "checkpoint", "fault"]


@dataclass(frozen=True)
class Event:
    """One report, tagged with the cycle during which it was made."""

    cycle: int
    kind: EventKind
    entity: str
    token: object = None
    message: str | None = None
    point: str | None = None  # checkpoint only: capture / infer / publish


@dataclass(frozen=True)
class EntityStatus:
    id: str
    kind: str
    safety_relevant: bool
    status: EntityState
    latched: bool
    violations: int
    faults: int
    failed_cycles: int
    last_alive_cycle: int | None
    open_since_cycle: int | None  # earliest begin cycle of unfinished work (deadline-supervised entities)
    last_fault: str | None
    last_violation: str | None
    failing: tuple[str, ...] = ()  # the checks (alive, deadline, logical, fault) in a failing run now

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status.value,
            "safety_relevant": self.safety_relevant,
            "latched": self.latched,
            "violations": self.violations,
            "faults": self.faults,
            "failed_cycles": self.failed_cycles,
            "last_alive_cycle": self.last_alive_cycle,
            "open_since_cycle": self.open_since_cycle,
            "last_fault": self.last_fault,
            "last_violation": self.last_violation,
            "failing": list(self.failing),
        }


@dataclass(frozen=True)
class Transition:
    entity: str
    old: EntityState
    new: EntityState


@dataclass(frozen=True)
class Snapshot:
    cycle: int
    state: GlobalState
    previous_state: GlobalState
    entities: Mapping[str, EntityStatus]  # in spec order
    changed: tuple[Transition, ...]  # entity status changes made by this step
    unknown_events: int

    @property
    def state_changed(self) -> bool:
        return self.state is not self.previous_state

    def not_ok(self) -> list[EntityStatus]:
        return [e for e in self.entities.values() if e.status is not EntityState.OK]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, with stable keys: the heartbeat body."""
        return {
            "cycle": self.cycle,
            "state": self.state.value,
            "entities": {eid: e.as_dict() for eid, e in self.entities.items()},
            "changed": [{"entity": t.entity, "from": t.old.value, "to": t.new.value} for t in self.changed],
            "unknown_events": self.unknown_events,
        }


@dataclass
class _Tracker:
    """Mutable per-entity bookkeeping of the core."""

    spec: EntitySpec
    alive_ref: int = -1  # the alive window is measured from here (last alive, or start / reset)
    last_alive: int | None = None
    open_work: deque = field(default_factory=deque)  # [begin cycle, already counted as overdue]
    runs: dict = field(default_factory=lambda: {"alive": 0, "deadline": 0, "logical": 0, "fault": 0})
    latched: bool = False
    status: EntityState = EntityState.OK
    violations: int = 0
    faults: int = 0
    failed_cycles: int = 0
    last_fault: str | None = None
    last_violation: str | None = None
    held_since: int | None = None  # last failing step of an entity that has not shown progress since
    seen: dict = field(default_factory=lambda: {p: OrderedDict() for p in CHECKPOINTS})
    last_seq: dict = field(default_factory=lambda: {p: OrderedDict() for p in CHECKPOINTS})


def _remember(memory: OrderedDict, key: object, value: object = None) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > FLOW_MEMORY:
        memory.popitem(last=False)


def _token_key(token: object) -> object:
    try:
        hash(token)
    except TypeError:
        return ("unhashable", repr(token))
    return token


def _source_seq(token: object) -> tuple[object, int] | None:
    """(source, seq) for tokens shaped like that; other tokens are only checked for membership."""
    if isinstance(token, tuple) and len(token) == 2:
        seq = token[1]
        if isinstance(seq, int) and not isinstance(seq, bool):
            return _token_key(token[0]), seq
    return None


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


class SupervisorCore:
    """The pure decision logic. Call `step(events)` once per cycle with the events reported since the last
    step; cycles count from 0."""

    def __init__(self, config: WatchdogConfig, specs: Sequence[EntitySpec]):
        self.config = config
        self._trackers: dict[str, _Tracker] = {}
        for spec in specs:
            if spec.id in self._trackers:
                raise ValueError(f"watchdog: entity id {spec.id!r} used more than once")
            self._trackers[spec.id] = _Tracker(spec)
        self._tolerance = {
            "alive": config.alive_tolerance_cycles,
            "deadline": config.deadline_tolerance_cycles,
            "logical": config.logical_tolerance_cycles,
            "fault": config.fault_tolerance_cycles,
        }
        self._next_cycle = 0
        self._unknown_events = 0
        # Alive windows start after the start-up grace: as if every entity was alive at its last cycle.
        grace_cycles = math.ceil(config.startup_grace_ms / config.period_ms - 1e-9)
        for tracker in self._trackers.values():
            tracker.alive_ref = grace_cycles - 1
        self._snapshot = self._make_snapshot(-1, GlobalState.OK, GlobalState.OK, ())

    @property
    def next_cycle(self) -> int:
        """The cycle the next `step` evaluates."""
        return self._next_cycle

    @property
    def snapshot(self) -> Snapshot:
        """The latest snapshot (cycle -1, all OK, before the first step)."""
        return self._snapshot

    def reset(self) -> None:
        """Clear latches and failure runs; alive windows restart. Takes effect at the next step."""
        for tracker in self._trackers.values():
            tracker.latched = False
            tracker.held_since = None
            tracker.alive_ref = max(tracker.alive_ref, self._next_cycle - 1)
            for check in tracker.runs:
                tracker.runs[check] = 0

    def step(self, events: Iterable[Event]) -> Snapshot:
        cycle = self._next_cycle
        events = list(events)
        for event in events:
            if event.cycle > cycle:
                raise ValueError(f"event {event} is tagged after the cycle being stepped ({cycle})")
        failing: dict[str, set[str]] = {eid: set() for eid in self._trackers}
        for event in events:
            self._apply(event, failing)

        previous = {eid: t.status for eid, t in self._trackers.items()}
        for eid, tracker in self._trackers.items():
            self._evaluate(tracker, cycle, failing[eid])
        changed = tuple(
            Transition(eid, previous[eid], t.status)
            for eid, t in self._trackers.items()
            if t.status is not previous[eid]
        )
        state = self._global_state()
        self._snapshot = self._make_snapshot(cycle, state, self._snapshot.state, changed)
        self._next_cycle = cycle + 1
        return self._snapshot

    # -- events ------------------------------------------------------------------------------------------

    def _apply(self, event: Event, failing: dict[str, set[str]]) -> None:
        if event.kind == "checkpoint":
            tracker = self._trackers.get(flow_id(event.entity)) or self._flow_tracker(event.entity)
            if tracker is None:
                self._unknown_events += 1
                return
            self._checkpoint(tracker, event, failing[tracker.spec.id])
            return
        tracker = self._trackers.get(event.entity)
        if tracker is None:
            self._unknown_events += 1
            return
        spec = tracker.spec
        if event.kind == "alive":
            self._mark_alive(tracker, event.cycle)
        elif event.kind == "begin":
            if spec.deadline_cycles is not None:
                if len(tracker.open_work) >= MAX_OPEN_WORK:
                    self._fault(tracker, f"more than {MAX_OPEN_WORK} begins without end", failing[spec.id])
                else:
                    tracker.open_work.append([event.cycle, False])
        elif event.kind == "end":
            self._mark_alive(tracker, event.cycle)  # finished work is progress
            if spec.deadline_cycles is not None:
                if not tracker.open_work:
                    self._fault(tracker, "end without begin", failing[spec.id])
                    return
                began, counted = tracker.open_work.popleft()
                if event.cycle - began > spec.deadline_cycles and not counted:
                    self._violation(
                        tracker,
                        f"work begun at cycle {began} ended at cycle {event.cycle}, "
                        f"deadline {spec.deadline_cycles} cycles",
                    )
                    failing[spec.id].add("deadline")
        elif event.kind == "fault":
            self._fault(tracker, event.message or "fault", failing[spec.id])
        else:
            self._unknown_events += 1

    def _flow_tracker(self, entity: str) -> _Tracker | None:
        tracker = self._trackers.get(entity)
        return tracker if tracker is not None and tracker.spec.kind == "flow" else None

    def _checkpoint(self, tracker: _Tracker, event: Event, failing: set[str]) -> None:
        point = event.point
        if point not in CHECKPOINTS:
            self._violation(tracker, f"unknown checkpoint {point!r}")
            failing.add("logical")
            return
        key = _token_key(event.token)
        before = {"infer": "capture", "publish": "infer"}.get(point)
        if before is not None and key not in tracker.seen[before]:
            self._violation(tracker, f"{point} of {event.token!r} without {before}")
            failing.add("logical")
        source_seq = _source_seq(event.token)
        if source_seq is not None:
            source, seq = source_seq
            last = tracker.last_seq[point].get(source)
            if last is not None and seq < last:
                self._violation(tracker, f"{point}: seq of {source!r} went back from {last} to {seq}")
                failing.add("logical")
            _remember(tracker.last_seq[point], source, seq)
        _remember(tracker.seen[point], key)

    @staticmethod
    def _mark_alive(tracker: _Tracker, cycle: int) -> None:
        if tracker.last_alive is None or cycle > tracker.last_alive:
            tracker.last_alive = cycle
        tracker.alive_ref = max(tracker.alive_ref, cycle)

    @staticmethod
    def _fault(tracker: _Tracker, message: str, failing: set[str]) -> None:
        tracker.faults += 1
        tracker.last_fault = _clip(message)
        failing.add("fault")

    @staticmethod
    def _violation(tracker: _Tracker, message: str) -> None:
        tracker.violations += 1
        tracker.last_violation = _clip(message)

    # -- evaluation --------------------------------------------------------------------------------------

    def _evaluate(self, tracker: _Tracker, cycle: int, failing: set[str]) -> None:
        spec = tracker.spec
        if spec.alive_cycles is not None and cycle - tracker.alive_ref > spec.alive_cycles:
            if tracker.runs["alive"] == 0:
                since = "start" if tracker.last_alive is None else f"cycle {tracker.last_alive}"
                self._violation(tracker, f"no alive indication since {since}")
            failing.add("alive")
        if spec.deadline_cycles is not None:
            for work in tracker.open_work:
                if cycle - work[0] >= spec.deadline_cycles:
                    failing.add("deadline")
                    if not work[1]:
                        work[1] = True
                        self._violation(
                            tracker,
                            f"work begun at cycle {work[0]} still running at cycle {cycle}, "
                            f"deadline {spec.deadline_cycles} cycles",
                        )

        status = EntityState.OK
        for check in tracker.runs:
            run = tracker.runs[check] + 1 if check in failing else 0
            tracker.runs[check] = run
            if run == 0:
                check_status = EntityState.OK
            elif run <= self._tolerance[check]:
                check_status = EntityState.FAILED
            else:
                check_status = EntityState.EXPIRED
            if _SEVERITY[check_status] > _SEVERITY[status]:
                status = check_status
        if failing:
            tracker.failed_cycles += 1
        if self.config.latch_safe_stop and spec.safety_relevant and status is EntityState.EXPIRED:
            tracker.latched = True
        if status is not EntityState.OK:
            if spec.alive_cycles is not None:
                tracker.held_since = cycle
        elif tracker.held_since is not None:
            if tracker.last_alive is not None and tracker.last_alive > tracker.held_since:
                tracker.held_since = None  # really back: progress after the last failure
            else:
                status = tracker.status  # no progress since it failed: keep what it was
        tracker.status = EntityState.EXPIRED if tracker.latched else status

    def _global_state(self) -> GlobalState:
        relevant = [t.status for t in self._trackers.values() if t.spec.safety_relevant]
        if EntityState.EXPIRED in relevant:
            return GlobalState.SAFE_STOP
        if EntityState.FAILED in relevant:
            return GlobalState.FAULT
        if any(t.status is not EntityState.OK for t in self._trackers.values()):
            return GlobalState.DEGRADED
        return GlobalState.OK

    def describe(self, status: EntityStatus, cycle: int) -> str:
        """Which supervision failed for an entity, in milliseconds and the config keys that set the limit."""
        tracker = self._trackers.get(status.id)
        if tracker is None:
            return f"{status.id} {status.status.value}"
        spec, period = tracker.spec, self.config.period_ms
        parts = []
        for check in status.failing:
            tolerance = f"watchdog.{check}_tolerance_cycles {self._tolerance[check]} x period_ms {period}"
            if check == "deadline":
                since = status.open_since_cycle
                running = (f"an inference running for {(cycle - since + 1) * period} ms" if since is not None
                           else "an inference that ended late")
                budget = f"budget_ms {spec.budget_ms:g}" if spec.budget_ms else f"{spec.deadline_cycles} cycle(s)"
                parts.append(f"deadline: {running}; {budget} + {tolerance}")
            elif check == "alive":
                what = {"source": "no frame", "model": "no inference finished", "output": "nothing written"}.get(
                    spec.kind, "no progress")
                silent = (f"for {(cycle - tracker.last_alive) * period} ms" if tracker.last_alive is not None
                          else f"since start ({(cycle + 1) * period} ms)")
                if spec.kind == "output":
                    limit = f"watchdog.output_alive_s {self.config.output_alive_s:g}"
                elif spec.min_fps:
                    limit = f"min_fps {spec.min_fps:g} = every {1000 / spec.min_fps:.0f} ms"
                else:
                    limit = f"{spec.alive_cycles} cycle(s)"
                parts.append(f"alive: {what} {silent}; {limit} + {tolerance}")
            elif check == "fault":
                parts.append(f"faults in {tracker.runs['fault']} cycle(s) in a row, watchdog.fault_tolerance_cycles "
                             f"{self._tolerance['fault']}; last: {tracker.last_fault}")
            else:
                parts.append(f"order: {tracker.last_violation} (watchdog.logical_tolerance_cycles "
                             f"{self._tolerance['logical']})")
        if not parts and tracker.held_since is not None and status.status is not EntityState.OK:
            parts.append(f"held: no progress since its last failure at cycle {tracker.held_since}")
        if status.latched and not parts:
            parts.append("latched until a reset (SIGUSR1, the ZeroMQ reset command or a restart)")
        return f"{status.id} {status.status.value}" + (f" ({'; '.join(parts)})" if parts else "")

    def _make_snapshot(self, cycle: int, state: GlobalState, previous: GlobalState,
                       changed: tuple[Transition, ...]) -> Snapshot:
        entities = {
            eid: EntityStatus(
                id=eid,
                kind=t.spec.kind,
                safety_relevant=t.spec.safety_relevant,
                status=t.status,
                latched=t.latched,
                violations=t.violations,
                faults=t.faults,
                failed_cycles=t.failed_cycles,
                last_alive_cycle=t.last_alive,
                open_since_cycle=min((work[0] for work in t.open_work), default=None),
                last_fault=t.last_fault,
                last_violation=t.last_violation,
                failing=tuple(check for check, run in t.runs.items() if run > 0),
            )
            for eid, t in self._trackers.items()
        }
        return Snapshot(cycle, state, previous, MappingProxyType(entities), changed, self._unknown_events)


class Supervisor:
    """Thread-safe wrapper: implements `HealthReporter`, ticks `SupervisorCore` at the configured period on
    the monotonic clock, runs `on_cycle` callbacks, executes the safe-stop actions it owns and pings
    systemd's watchdog.

    Safe-stop actions (config.on_safe_stop) while the state is SAFE_STOP:
      stop_watchdog_pings     no more WATCHDOG=1, so systemd's WatchdogSec kills and restarts us
      exit                    `exit_code` becomes config.exit_code and `wait_for_exit` returns it; the main
                              thread shuts the pipeline down and exits with it
      invalidate_detections   `detections_valid` is False: outputs publish an explicit invalid marker
      publish_status          systemd STATUS= names the cause; the pipeline publishes the safe status
                              from its `on_cycle` callback (it sees the action in `active_actions`)

    Reports made before `start()` count toward cycle 0. Callbacks run on the supervisor thread after each
    step, outside the lock (they may call back into the supervisor); keep them short, they delay the next
    step. systemd starts its WatchdogSec= timer only after READY=1, so warm-up needs no pings; the first
    ping goes out at the first step. An injected `sleep` must return when `stop()` is called.
    """

    def __init__(
        self,
        config: WatchdogConfig,
        specs: Sequence[EntitySpec],
        *,
        notifier: SystemdNotifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        on_cycle: Iterable[Callable[[Snapshot], object]] = (),
        max_pending: int = 10_000,
    ):
        self.config = config
        self._core = SupervisorCore(config, specs)
        self._period_ns = config.period_ms * 1_000_000
        self._clock = clock
        self._sleep = sleep if sleep is not None else self._wait_for_stop
        self._notifier = notifier
        self._callbacks = list(on_cycle)
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: deque[Event] = deque()
        self._t0: float | None = None
        self._snapshot = self._core.snapshot
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._crashed = False
        self._last_ping: float | None = None
        self._exit = threading.Event()
        self._exit_code: int | None = None
        self._errors = RateLimitedLog(log)
        self.late_steps = 0  # steps run more than a period after their cycle ended
        self.callback_errors = 0
        self.dropped_events = 0

    # -- HealthReporter ----------------------------------------------------------------------------------

    def alive(self, entity: str) -> None:
        self._record("alive", entity)

    def begin(self, entity: str) -> None:
        self._record("begin", entity)

    def end(self, entity: str) -> None:
        self._record("end", entity)

    def checkpoint(self, entity: str, point: str, token: object) -> None:
        self._record("checkpoint", entity, token=token, point=point)

    def fault(self, entity: str, message: str) -> None:
        self._record("fault", entity, message=message)

    def _record(self, kind: EventKind, entity: str, token: object = None, message: str | None = None,
                point: str | None = None) -> None:
        with self._lock:
            if len(self._pending) >= self._max_pending:
                self.dropped_events += 1
                dropped = True
            else:
                # The clock is read under the lock, so a report never lands in a cycle already stepped.
                cycle = 0 if self._t0 is None else max(self._cycle_at(self._clock()), self._core.next_cycle)
                self._pending.append(Event(cycle, kind, entity, token=token, message=message, point=point))
                dropped = False
        if dropped:
            self._errors.log(logging.ERROR, "dropped", "watchdog: event queue full, dropping reports")

    # -- state -------------------------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def state(self) -> GlobalState:
        return self._snapshot.state

    @property
    def healthy(self) -> bool:
        return not self._crashed and self._snapshot.state is not GlobalState.SAFE_STOP

    @property
    def active_actions(self) -> frozenset[str]:
        """The configured safe-stop actions while in SAFE_STOP (or after an internal error), else none."""
        return frozenset() if self.healthy else frozenset(self.config.on_safe_stop)

    @property
    def detections_valid(self) -> bool:
        return "invalidate_detections" not in self.active_actions

    @property
    def exit_code(self) -> int | None:
        """config.exit_code once a safe stop asked the process to exit, else None."""
        return self._exit_code

    def wait_for_exit(self, timeout: float | None = None) -> int | None:
        self._exit.wait(timeout)
        return self._exit_code

    def heartbeat(self, snapshot: Snapshot | None = None) -> dict[str, Any]:
        """The snapshot's dict plus the supervisor's own counters and the active actions."""
        snap = self._snapshot if snapshot is None else snapshot
        body = snap.as_dict()
        safe_stop = snap.state is GlobalState.SAFE_STOP or self._crashed
        body["actions"] = sorted(self.config.on_safe_stop) if safe_stop else []
        body["late_steps"] = self.late_steps
        body["callback_errors"] = self.callback_errors
        body["dropped_events"] = self.dropped_events
        return body


    def reset(self) -> None:
        """Leave a latched SAFE_STOP (from the next step on). An exit already requested stays requested."""
        with self._lock:
            self._core.reset()
        log.warning("watchdog: reset requested at cycle %d", self._snapshot.cycle)

    # -- running -----------------------------------------------------------------------------------------

    def start(self, background: bool = True) -> None:
        """Cycle 0 starts now. With background=False no thread runs: call `poll()` (tests, single-threaded
        tools)."""
        with self._lock:
            if self._t0 is not None:
                raise RuntimeError("supervisor already started")
            self._t0 = self._clock()
        if background:
            self._thread = threading.Thread(target=self._run, name="edgeinfer-watchdog", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def poll(self) -> list[Snapshot]:
        """Step every cycle that has ended, run callbacks and actions, ping systemd; returns the snapshots."""
        if self._t0 is None:
            raise RuntimeError("supervisor not started")
        snapshots = []
        while True:
            with self._lock:
                now = self._clock()
                cycle = self._core.next_cycle
                elapsed_ns = self._elapsed_ns(now)
                if elapsed_ns // self._period_ns <= cycle:
                    break
                batch = []
                while self._pending and self._pending[0].cycle <= cycle:
                    batch.append(self._pending.popleft())
                snapshot = self._core.step(batch)
                self._snapshot = snapshot
            if elapsed_ns - (cycle + 1) * self._period_ns > self._period_ns:
                self.late_steps += 1
            self._after_step(snapshot)
            snapshots.append(snapshot)
        self._maybe_ping(now)
        return snapshots

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                due_ns = (self._core.next_cycle + 1) * self._period_ns
                delay_ns = due_ns - self._elapsed_ns(self._clock())
                if delay_ns > 0:
                    # Sleeping to an absolute deadline, not a fixed period, keeps the cycle from drifting.
                    self._sleep(delay_ns / 1e9)
                    continue
                self.poll()
        except Exception:
            # A broken supervisor must fail safe: no more pings, and the process is asked to exit.
            log.exception("watchdog: supervisor thread failed; entering safe stop")
            self._crashed = True
            self._request_exit()

    def _wait_for_stop(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _elapsed_ns(self, now: float) -> int:
        # Whole nanoseconds, so float noise (0.15 / 0.05 = 2.9999...) never shifts a cycle boundary.
        return round((now - self._t0) * 1e9)

    def _cycle_at(self, now: float) -> int:
        return self._elapsed_ns(now) // self._period_ns

    def _after_step(self, snapshot: Snapshot) -> None:
        if snapshot.state_changed:
            self._on_state_change(snapshot)
        for callback in list(self._callbacks):
            try:
                callback(snapshot)
            except Exception as error:  # a broken heartbeat publisher must not stop supervision
                self.callback_errors += 1
                self._errors.log(logging.ERROR, f"callback:{id(callback)}",
                                 "watchdog: on_cycle callback %r failed: %r", callback, error)
        if snapshot.state is GlobalState.SAFE_STOP and "exit" in self.config.on_safe_stop:
            self._request_exit()

    def _on_state_change(self, snapshot: Snapshot) -> None:
        causes = self.describe_causes(snapshot)
        level = {
            GlobalState.OK: logging.INFO,
            GlobalState.DEGRADED: logging.WARNING,
            GlobalState.FAULT: logging.ERROR,
            GlobalState.SAFE_STOP: logging.CRITICAL,
        }[snapshot.state]
        log.log(level, "watchdog: %s -> %s at cycle %d (%s)", snapshot.previous_state.value,
                snapshot.state.value, snapshot.cycle, causes)
        if self._notifier is not None and (
            snapshot.state is not GlobalState.SAFE_STOP or "publish_status" in self.config.on_safe_stop
        ):
            self._notifier.status(f"{snapshot.state.value}: {causes}")

    def describe_causes(self, snapshot: Snapshot | None = None) -> str:
        """Every entity that is not OK, with which supervision failed, in ms and config keys."""
        snap = self._snapshot if snapshot is None else snapshot
        with self._lock:
            causes = [self._core.describe(e, snap.cycle) for e in snap.not_ok()]
        return "; ".join(causes) or "all entities OK"

    def _request_exit(self) -> None:
        if self._exit_code is None and "exit" in self.config.on_safe_stop:
            self._exit_code = self.config.exit_code
            self._exit.set()

    def _maybe_ping(self, now: float) -> None:
        notifier = self._notifier
        interval = notifier.watchdog_interval_s if notifier is not None else None
        if interval is None:
            return
        if not self.healthy and "stop_watchdog_pings" in self.config.on_safe_stop:
            return
        if self._last_ping is None or now - self._last_ping >= interval:
            notifier.watchdog()
            self._last_ping = now
