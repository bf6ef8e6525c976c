"""The supervisor's decisions, exact to the cycle, driven by event lists and a virtual clock."""

from __future__ import annotations

import inspect
import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgeinfer.health import HealthReporter
from edgeinfer.watchdog import (
    EntitySpec,
    EntityState,
    Event,
    GlobalState,
    Snapshot,
    Supervisor,
    SupervisorCore,
    WatchdogConfig,
    build_specs,
    cycles_for,
    flow_id,
)
from edgeinfer.watchdog.supervisor import FLOW_MEMORY
from support.virtual_time import VirtualTime

OK, FAILED, EXPIRED = EntityState.OK, EntityState.FAILED, EntityState.EXPIRED
G_OK, DEGRADED, FAULT, SAFE_STOP = (GlobalState.OK, GlobalState.DEGRADED, GlobalState.FAULT,
                                    GlobalState.SAFE_STOP)
PERIOD = WatchdogConfig().period_ms / 1000  # seconds, the default period (0.05)


def no_grace(**fields) -> WatchdogConfig:
    """These tests count cycles from 0, so the start-up grace (tested on its own) is switched off."""
    return WatchdogConfig(**{"startup_grace_ms": 0, **fields})


class Driver:
    """Steps a SupervisorCore, tagging each report with the cycle being stepped, and keeps the history."""

    def __init__(self, specs: list[EntitySpec], **config):
        self.core = SupervisorCore(no_grace(**config), specs)
        self.history: list[Snapshot] = []

    def step(self, *reports: tuple) -> Snapshot:
        """reports: (kind, entity) or ("checkpoint", model, point, token) or ("fault", entity, message)."""
        cycle = self.core.next_cycle
        events = [to_event(cycle, report) for report in reports]
        snapshot = self.core.step(events)
        self.history.append(snapshot)
        return snapshot

    def run(self, until: int, *reports: tuple) -> None:
        """Step up to and including cycle `until`, making the same reports at every cycle."""
        while self.core.next_cycle <= until:
            self.step(*reports)

    def entity_changes(self, entity: str) -> list[tuple[int, EntityState]]:
        return [(s.cycle, t.new) for s in self.history for t in s.changed if t.entity == entity]

    def state_changes(self) -> list[tuple[int, GlobalState]]:
        return [(s.cycle, s.state) for s in self.history if s.state_changed]


def to_event(cycle: int, report: tuple) -> Event:
    kind, entity = report[0], report[1]
    if kind == "checkpoint":
        return Event(cycle, "checkpoint", entity, point=report[2], token=report[3])
    if kind == "fault":
        return Event(cycle, "fault", entity, message=report[2] if len(report) > 2 else "boom")
    return Event(cycle, kind, entity)


def source(relevant: bool = True, alive: int = 2) -> EntitySpec:
    return EntitySpec("cam", "source", alive_cycles=alive, safety_relevant=relevant)


def model(relevant: bool = True, deadline: int = 2, alive: int | None = None) -> EntitySpec:
    return EntitySpec("yolo", "model", alive_cycles=alive, deadline_cycles=deadline, safety_relevant=relevant)


def flow(relevant: bool = True) -> EntitySpec:
    return EntitySpec(flow_id("yolo"), "flow", safety_relevant=relevant)


def passes(seq: int, *points: str) -> list[tuple]:
    return [("checkpoint", "yolo", point, ("cam", seq)) for point in points]


# -- alive supervision --------------------------------------------------------------------------------------


def test_source_stall_fails_then_expires_at_exact_cycles():
    d = Driver([source(alive=2)], alive_tolerance_cycles=2)
    d.run(10, ("alive", "cam"))  # last alive at cycle 10
    d.run(20)
    # first failing at L + A + 1 = 13: FAILED at 13 and 14 (tolerance 2), EXPIRED at 13 + 2 = 15
    assert d.entity_changes("cam") == [(13, FAILED), (15, EXPIRED)]
    assert d.state_changes() == [(13, FAULT), (15, SAFE_STOP)]
    cam = d.history[-1].entities["cam"]
    assert cam.last_alive_cycle == 10
    assert cam.violations == 1  # one stall, one violation
    assert cam.failed_cycles == 20 - 13 + 1


def test_alive_at_the_margin_never_fails():
    d = Driver([source(alive=2)], alive_tolerance_cycles=0)
    for cycle in range(30):
        if cycle % 3 == 0:
            d.step(("alive", "cam"))
        else:
            d.step()  # two silent cycles in a row: exactly A
    assert d.entity_changes("cam") == []


def test_startup_counts_as_alive_just_before_cycle_zero():
    d = Driver([source(alive=2)], alive_tolerance_cycles=1)
    d.run(6)
    # as if alive at -1: first failing at -1 + 2 + 1 = 2, EXPIRED at 2 + 1 = 3
    assert d.entity_changes("cam") == [(2, FAILED), (3, EXPIRED)]
    assert d.history[-1].entities["cam"].last_alive_cycle is None


def test_alive_within_tolerance_recovers():
    d = Driver([source(alive=2)], alive_tolerance_cycles=2)
    d.run(10, ("alive", "cam"))
    d.run(14)  # FAILED at 13 and 14: the two tolerated failing cycles
    d.step(("alive", "cam"))  # cycle 15 = 13 + 2: without this report the check would expire now
    d.run(20, ("alive", "cam"))
    assert d.entity_changes("cam") == [(13, FAILED), (15, OK)]
    assert d.state_changes() == [(13, FAULT), (15, G_OK)]


def test_alive_one_cycle_after_the_tolerance_is_too_late():
    d = Driver([source(alive=2)], alive_tolerance_cycles=2)
    d.run(10, ("alive", "cam"))
    d.run(15)  # FAILED at 13 and 14, EXPIRED at 15
    d.run(20, ("alive", "cam"))
    assert d.entity_changes("cam") == [(13, FAILED), (15, EXPIRED)]
    assert d.history[-1].state is SAFE_STOP  # latched


@pytest.mark.parametrize("tolerance", [0, 1, 2, 3, 5])
def test_tolerance_is_the_number_of_failed_cycles_before_expired(tolerance):
    d = Driver([source(alive=2)], alive_tolerance_cycles=tolerance)
    d.run(4, ("alive", "cam"))  # last alive 4: first failing at 7
    d.run(7 + tolerance + 2)
    statuses = [s.entities["cam"].status for s in d.history]
    assert statuses == [OK] * 7 + [FAILED] * tolerance + [EXPIRED] * 3
    assert d.history[-1].entities["cam"].failed_cycles == tolerance + 3


@pytest.mark.parametrize(
    "check, config, reports, first_failing",
    [
        ("alive", {"alive_tolerance_cycles": 0}, {}, 2),  # never alive: 2 - (-1) > A = 2
        ("deadline", {"deadline_tolerance_cycles": 0}, {1: [("begin", "yolo")]}, 3),  # b + D = 1 + 2
        ("fault", {"fault_tolerance_cycles": 0}, {4: [("fault", "yolo", "x")]}, 4),
        ("logical", {"logical_tolerance_cycles": 0}, {5: passes(1, "infer")}, 5),  # infer without capture
    ],
)
def test_tolerance_zero_expires_at_the_first_failing_step(check, config, reports, first_failing):
    specs = [model(deadline=2, alive=2 if check == "alive" else None), flow()]
    d = Driver(specs, **config)
    for cycle in range(first_failing + 3):
        d.step(*reports.get(cycle, []))
    entity = flow_id("yolo") if check == "logical" else "yolo"
    assert d.entity_changes(entity) == [(first_failing, EXPIRED)], check  # no FAILED step in between
    assert d.state_changes() == [(first_failing, SAFE_STOP)], check
    assert d.history[first_failing].entities[entity].failed_cycles == 1


def test_only_non_safety_relevant_failures_degrade():
    d = Driver([source(relevant=False, alive=2), model()], alive_tolerance_cycles=2)
    d.run(10, ("alive", "cam"))
    d.run(20)
    d.run(25, ("alive", "cam"))
    assert d.entity_changes("cam") == [(13, FAILED), (15, EXPIRED), (21, OK)]
    assert d.state_changes() == [(13, DEGRADED), (21, G_OK)]
    assert not d.history[20].entities["cam"].latched  # only safety-relevant entities latch


def test_end_counts_as_alive():
    d = Driver([model(deadline=5, alive=2)], alive_tolerance_cycles=0)
    for _ in range(10):
        d.step(("begin", "yolo"))
        d.step(("end", "yolo"))
    assert d.entity_changes("yolo") == []
    assert d.history[-1].entities["yolo"].last_alive_cycle == 19


# -- deadline supervision -----------------------------------------------------------------------------------


def test_hung_inference_is_detected_while_it_hangs():
    d = Driver([model(deadline=2)], deadline_tolerance_cycles=1)
    d.run(4)
    d.step(("begin", "yolo"))  # cycle 5, never ends
    d.run(12)
    # b + D = 7: FAILED (one tolerated failing cycle); still hung at 8: EXPIRED
    assert d.entity_changes("yolo") == [(7, FAILED), (8, EXPIRED)]
    assert d.state_changes() == [(7, FAULT), (8, SAFE_STOP)]
    yolo = d.history[-1].entities["yolo"]
    assert yolo.violations == 1  # one piece of work, counted once
    assert yolo.failed_cycles == 12 - 7 + 1  # every step while it hangs fails
    assert yolo.last_violation == "work begun at cycle 5 still running at cycle 7, deadline 2 cycles"
    assert [s.entities["yolo"].open_since_cycle for s in d.history] == [None] * 5 + [5] * 8


@pytest.mark.parametrize("deadline", [1, 2, 3, 7])
@pytest.mark.parametrize("begin", [0, 4])
def test_hung_inference_is_safe_stop_at_exactly_b_plus_d(deadline, begin):
    d = Driver([model(relevant=True, deadline=deadline)], deadline_tolerance_cycles=0)
    d.run(begin - 1)
    d.step(("begin", "yolo"))  # cycle b, never ends
    d.run(begin + deadline + 3)
    assert d.state_changes() == [(begin + deadline, SAFE_STOP)]
    assert d.entity_changes("yolo") == [(begin + deadline, EXPIRED)]
    safe = d.history[begin + deadline]
    assert safe.entities["yolo"].open_since_cycle == begin  # the heartbeat shows the hang and since when
    assert safe.cycle - safe.entities["yolo"].open_since_cycle == deadline
    assert d.history[begin + deadline - 1].state is G_OK
    assert [s.entities["yolo"].open_since_cycle for s in d.history[:begin]] == [None] * begin


def test_deadline_tolerance_delays_expiry():
    d = Driver([model(deadline=2)], deadline_tolerance_cycles=3)
    d.run(4)
    d.step(("begin", "yolo"))  # 5
    d.run(15)
    assert d.entity_changes("yolo") == [(7, FAILED), (10, EXPIRED)]  # b + D = 7; 7 + 3 = 10


def test_end_exactly_at_the_deadline_is_in_time():
    d = Driver([model(deadline=2)])
    d.run(4)
    d.step(("begin", "yolo"))  # 5
    d.run(6)
    d.step(("end", "yolo"))  # 7 = b + D: the step of 7 sees the end before it looks for open work
    d.run(12)
    assert d.entity_changes("yolo") == []
    assert d.history[-1].entities["yolo"].violations == 0
    assert [s.entities["yolo"].open_since_cycle for s in d.history[4:9]] == [None, 5, 5, None, None]


def test_work_ending_after_b_plus_d_was_found_hung_at_b_plus_d():
    d = Driver([model(deadline=2)], deadline_tolerance_cycles=1)
    d.run(4)
    d.step(("begin", "yolo"))  # 5
    d.run(7)  # still open at the step of 7 = b + D
    d.step(("end", "yolo"))  # 8 = b + D + 1: late, but already counted at 7
    d.run(12)
    assert d.entity_changes("yolo") == [(7, FAILED), (8, OK)]
    yolo = d.history[-1].entities["yolo"]
    assert yolo.violations == 1
    assert yolo.last_violation == "work begun at cycle 5 still running at cycle 7, deadline 2 cycles"


@pytest.mark.parametrize("deadline", [1, 2, 5])
@pytest.mark.parametrize("late, status", [(False, OK), (True, EXPIRED)])
def test_late_end_reported_late_is_late_only_after_b_plus_d(deadline, late, status):
    # Both events reach the core at one step, tagged with the cycles they were made in (replayed logs), so
    # only the end rule can judge the work: an end at b + D is in time, at b + D + 1 it is late.
    begin, end = 3, 3 + deadline + int(late)
    core = SupervisorCore(no_grace(deadline_tolerance_cycles=0), [model(deadline=deadline)])
    for _ in range(10):
        core.step([])
    snapshot = core.step([Event(begin, "begin", "yolo"), Event(end, "end", "yolo")])
    yolo = snapshot.entities["yolo"]
    assert snapshot.cycle == 10
    assert (yolo.status, yolo.violations, yolo.open_since_cycle) == (status, int(late), None)
    if late:
        assert yolo.last_violation == f"work begun at cycle 3 ended at cycle {end}, deadline {deadline} cycles"


def test_two_inferences_in_flight_pair_first_in_first_out():
    d = Driver([model(deadline=2)], deadline_tolerance_cycles=1)
    d.run(4)
    d.step(("begin", "yolo"))  # 5
    d.step(("begin", "yolo"))  # 6
    d.step(("end", "yolo"))  # 7 closes the work of 5: in time (closing 6 instead would leave 5 hung at 7)
    d.step()  # 8: the work of 6 is still open at 6 + D
    d.step(("end", "yolo"))  # 9 closes the work of 6, already counted at 8
    d.run(12)
    assert d.entity_changes("yolo") == [(8, FAILED), (9, OK)]
    yolo = d.history[-1].entities["yolo"]
    assert (yolo.violations, yolo.faults) == (1, 0)
    assert yolo.last_violation == "work begun at cycle 6 still running at cycle 8, deadline 2 cycles"
    assert [s.entities["yolo"].open_since_cycle for s in d.history[4:11]] == [None, 5, 5, 6, 6, None, None]


def test_end_without_begin_is_a_fault():
    d = Driver([model(deadline=2)], fault_tolerance_cycles=1)
    d.run(2)
    d.step(("end", "yolo"))
    d.run(5)
    assert d.entity_changes("yolo") == [(3, FAILED), (4, OK)]
    assert d.history[-1].entities["yolo"].faults == 1
    assert d.history[-1].entities["yolo"].last_fault == "end without begin"


# -- logical supervision ------------------------------------------------------------------------------------


def test_order_capture_infer_publish_is_ok():
    d = Driver([flow()])
    for seq in range(20):
        d.step(*passes(seq, "capture", "infer", "publish"))
    # frames dropped between capture and infer (the mailbox overwrites) are fine
    d.step(*passes(20, "capture"), *passes(21, "capture", "infer", "publish"))
    assert d.entity_changes(flow_id("yolo")) == []


@pytest.mark.parametrize(
    "bad, why",
    [
        (passes(9, "infer"), "infer of a token never captured"),
        (passes(6, "capture", "publish"), "publish of a token never inferred"),
        (passes(2, "capture"), "seq going backwards"),
    ],
)
def test_order_violation_fails_that_cycle(bad, why):
    d = Driver([flow()], logical_tolerance_cycles=1)
    d.step(*passes(4, "capture", "infer", "publish"))  # 0
    d.step(*passes(5, "capture", "infer"))  # 1
    d.step(*passes(5, "publish"), *bad)  # 2: 5 was inferred, so only `bad` is a violation
    d.step(*passes(10, "capture", "infer", "publish"))  # 3
    assert d.entity_changes(flow_id("yolo")) == [(2, FAILED), (3, OK)], why
    assert d.history[-1].entities[flow_id("yolo")].violations == 1


def test_publish_before_infer_is_a_violation():
    d = Driver([flow()])  # default logical tolerance 0: the first violation expires
    d.step(*passes(1, "capture", "publish", "infer"))
    assert d.history[-1].entities[flow_id("yolo")].status is EXPIRED
    assert "without infer" in d.history[-1].entities[flow_id("yolo")].last_violation


def test_order_violations_in_consecutive_cycles_expire():
    d = Driver([flow()], logical_tolerance_cycles=1)
    d.step(*passes(1, "capture"))
    d.step(*passes(7, "infer"))  # 1
    d.step(*passes(8, "infer"))  # 2
    assert d.entity_changes(flow_id("yolo")) == [(1, FAILED), (2, EXPIRED)]
    assert d.state_changes() == [(1, FAULT), (2, SAFE_STOP)]


def test_flow_memory_is_bounded():
    d = Driver([flow()], logical_tolerance_cycles=1)
    d.step(("checkpoint", "yolo", "capture", ("rear", 0)))
    d.step(*[p for seq in range(10 * FLOW_MEMORY) for p in passes(seq, "capture")])
    tracker = d.core._trackers[flow_id("yolo")]
    assert len(tracker.seen["capture"]) == FLOW_MEMORY
    d.step(*passes(10 * FLOW_MEMORY - 1, "infer"))  # the newest is remembered
    assert d.history[-1].entities[flow_id("yolo")].status is OK
    # the oldest was forgotten: now indistinguishable from a token never captured
    d.step(("checkpoint", "yolo", "infer", ("rear", 0)))
    assert d.history[-1].entities[flow_id("yolo")].status is FAILED
    assert "without capture" in d.history[-1].entities[flow_id("yolo")].last_violation


def test_checkpoints_of_an_unknown_model_are_counted_not_fatal():
    d = Driver([flow()])
    snapshot = d.step(("checkpoint", "other", "capture", ("cam", 1)), ("alive", "nobody"))
    assert snapshot.unknown_events == 2
    assert snapshot.state is G_OK


# -- faults -------------------------------------------------------------------------------------------------


def test_fault_fails_its_cycle_then_recovers_at_the_next_progress():
    d = Driver([source(alive=100)], fault_tolerance_cycles=2)
    d.run(3)
    d.step(("fault", "cam", "decode error"), ("fault", "cam", "decode error 2"))  # 4
    d.run(8)  # clean cycles without a frame: the source is not back yet (hysteresis)
    d.step(("alive", "cam"))  # 9: a frame
    assert d.entity_changes("cam") == [(4, FAILED), (9, OK)]
    cam = d.history[-1].entities["cam"]
    assert (cam.faults, cam.failed_cycles, cam.last_fault) == (2, 1, "decode error 2")


def test_a_camera_that_cannot_open_reads_degraded_until_it_delivers_a_frame():
    # reconnect attempts with backoff: one fault every few cycles, clean cycles in between, no frame
    d = Driver([source(relevant=False, alive=100)], fault_tolerance_cycles=2)
    for cycle in range(60):
        if cycle in (0, 10, 30):
            d.step(("fault", "cam", "cannot open camera"))
        else:
            d.step()
    assert d.state_changes() == [(0, DEGRADED)]  # one transition, no flapping back to OK in between
    assert "held: no progress since its last failure at cycle 30" in d.core.describe(
        d.history[-1].entities["cam"], 59)
    d.step(("alive", "cam"))  # 60: the camera is back
    assert d.state_changes() == [(0, DEGRADED), (60, G_OK)]


def test_an_entity_without_alive_supervision_recovers_at_the_first_passing_step():
    d = Driver([model(relevant=False, deadline=2)], fault_tolerance_cycles=2)
    d.step(("fault", "yolo", "decoder exception"))  # 0
    d.run(3)
    assert d.entity_changes("yolo") == [(0, FAILED), (1, OK)]


def test_reset_clears_a_held_status():
    d = Driver([source(relevant=False, alive=100)], fault_tolerance_cycles=2)
    d.step(("fault", "cam", "cannot open camera"))  # 0
    d.run(3)
    d.core.reset()
    d.run(5)
    assert d.entity_changes("cam") == [(0, FAILED), (4, OK)]


def test_faults_in_every_cycle_expire_after_the_tolerance():
    d = Driver([source(alive=100)], fault_tolerance_cycles=2)
    d.run(3)
    d.run(10, ("fault", "cam", "read error"))
    assert d.entity_changes("cam") == [(4, FAILED), (6, EXPIRED)]  # FAILED at 4 and 5, EXPIRED at 4 + 2


# -- global state, latching, reset --------------------------------------------------------------------------


def test_safety_relevant_failed_outranks_other_expired():
    d = Driver([source(relevant=False, alive=2), model(deadline=2)], alive_tolerance_cycles=0,
               deadline_tolerance_cycles=1)
    d.run(3)  # cam: EXPIRED at 2 (tolerance 0)
    d.step(("begin", "yolo"))  # 4
    d.run(6)  # yolo FAILED at 4 + 2 = 6
    assert d.state_changes() == [(2, DEGRADED), (6, FAULT)]
    assert (d.history[6].entities["cam"].status, d.history[6].entities["yolo"].status) == (EXPIRED, FAILED)


def test_safe_stop_latches_until_reset():
    d = Driver([source(alive=2)], alive_tolerance_cycles=2, latch_safe_stop=True)
    d.run(10, ("alive", "cam"))
    d.run(19)  # SAFE_STOP at 15
    d.run(30, ("alive", "cam"))  # the camera is back, the latch holds
    assert d.history[30].state is SAFE_STOP
    assert d.history[30].entities["cam"].latched
    d.core.reset()
    d.run(35, ("alive", "cam"))
    assert d.entity_changes("cam") == [(13, FAILED), (15, EXPIRED), (31, OK)]
    assert d.state_changes() == [(13, FAULT), (15, SAFE_STOP), (31, G_OK)]
    assert d.history[-1].entities["cam"].violations == 1  # counters survive the reset


def test_reset_restarts_the_alive_window():
    d = Driver([source(alive=2)], alive_tolerance_cycles=2)
    d.run(10, ("alive", "cam"))
    d.run(20)
    d.core.reset()  # effective at step 21: as if alive at 20
    d.run(30)
    assert d.entity_changes("cam") == [(13, FAILED), (15, EXPIRED), (21, OK), (23, FAILED), (25, EXPIRED)]


def test_reset_finds_a_still_hung_inference_at_once():
    d = Driver([model(deadline=2)], deadline_tolerance_cycles=1)
    d.step(("begin", "yolo"))  # 0
    d.run(5)  # FAILED at 2, EXPIRED at 3, latched
    d.core.reset()  # effective at 6, where the work is still open: failing again at once
    d.run(8)
    assert d.entity_changes("yolo") == [(2, FAILED), (3, EXPIRED), (6, FAILED), (7, EXPIRED)]
    assert d.history[-1].entities["yolo"].violations == 1  # the same work, counted once


def test_without_latch_safe_stop_recovers():
    d = Driver([source(alive=2)], alive_tolerance_cycles=2, latch_safe_stop=False)
    d.run(10, ("alive", "cam"))
    d.run(19)
    d.run(25, ("alive", "cam"))
    assert d.entity_changes("cam") == [(13, FAILED), (15, EXPIRED), (20, OK)]
    assert d.state_changes() == [(13, FAULT), (15, SAFE_STOP), (20, G_OK)]


def test_events_from_the_future_are_rejected():
    core = SupervisorCore(no_grace(), [source()])
    with pytest.raises(ValueError, match="after the cycle"):
        core.step([Event(1, "alive", "cam")])


def test_snapshot_dict_is_json_with_stable_keys():
    d = Driver([source(alive=2), model(), flow()], alive_tolerance_cycles=1)
    d.step()
    d.step(("begin", "yolo"))  # 1
    d.run(3)
    body = d.history[2].as_dict()
    assert json.loads(json.dumps(body)) == body
    assert list(body) == ["cycle", "state", "entities", "changed", "unknown_events"]
    assert list(body["entities"]) == ["cam", "yolo", "yolo/flow"]
    assert body["entities"]["cam"] == {
        "kind": "source", "status": "FAILED", "safety_relevant": True, "latched": False, "violations": 1,
        "faults": 0, "failed_cycles": 1, "last_alive_cycle": None, "open_since_cycle": None, "last_fault": None,
        "last_violation": "no alive indication since start", "failing": ["alive"],
    }
    assert body["entities"]["yolo"] == {
        "kind": "model", "status": "OK", "safety_relevant": True, "latched": False, "violations": 0,
        "faults": 0, "failed_cycles": 0, "last_alive_cycle": None, "open_since_cycle": 1, "last_fault": None,
        "last_violation": None, "failing": [],
    }
    assert list(body["entities"]["cam"]) == [
        "kind", "status", "safety_relevant", "latched", "violations", "faults", "failed_cycles",
        "last_alive_cycle", "open_since_cycle", "last_fault", "last_violation", "failing",
    ]
    assert body["changed"] == [{"entity": "cam", "from": "OK", "to": "FAILED"}]
    assert (body["cycle"], body["state"]) == (2, "FAULT")


# -- determinism --------------------------------------------------------------------------------------------

ENTITIES = ["cam", "yolo", "out", "ghost"]
reports = st.one_of(
    st.tuples(st.sampled_from(["alive", "begin", "end"]), st.sampled_from(ENTITIES)),
    st.tuples(st.just("fault"), st.sampled_from(ENTITIES), st.text(max_size=5)),
    st.tuples(st.just("checkpoint"), st.just("yolo"), st.sampled_from(["capture", "infer", "publish", "x"]),
              st.tuples(st.just("cam"), st.integers(0, 6))),
)
# each step: the reports, how many cycles back each is tagged (late delivery), and whether to reset first
steps = st.lists(st.tuples(st.lists(st.tuples(reports, st.integers(0, 2)), max_size=6), st.booleans()),
                 max_size=40)
SPECS = [source(alive=2), model(deadline=2, alive=3),
         flow(), EntitySpec("out", "output", alive_cycles=4)]


def replay(plan, **config) -> list[Snapshot]:
    core = SupervisorCore(no_grace(**config), SPECS)
    history = []
    for step_reports, reset in plan:
        cycle = core.next_cycle
        if reset and cycle % 7 == 0:
            core.reset()
        history.append(core.step([to_event(max(0, cycle - back), r) for r, back in step_reports]))
    return history


@settings(max_examples=150, deadline=None)
@given(plan=steps, latch=st.booleans(), tolerance=st.integers(0, 3))
def test_same_events_give_the_same_snapshots(plan, latch, tolerance):
    config = dict(latch_safe_stop=latch, alive_tolerance_cycles=tolerance, fault_tolerance_cycles=tolerance,
                  deadline_tolerance_cycles=tolerance, logical_tolerance_cycles=tolerance)
    first, second = replay(plan, **config), replay(plan, **config)
    assert first == second
    assert [s.as_dict() for s in first] == [s.as_dict() for s in second]
    statuses: dict[str, list[EntityState]] = {e.id: [] for e in SPECS}
    for snapshot in first:
        for entity in snapshot.entities.values():
            seen = statuses[entity.id]
            if entity.status is EXPIRED and (not seen or seen[-1] is not EXPIRED):
                # a check expires after exactly `tolerance` failed cycles, all of them steps just before
                assert len(seen) >= tolerance and OK not in seen[len(seen) - tolerance:], (entity.id, seen)
            if tolerance == 0:
                assert entity.status is not FAILED  # nothing is tolerated: OK or EXPIRED
            seen.append(entity.status)
        relevant = [e.status for e in snapshot.entities.values() if e.safety_relevant]
        expected = (SAFE_STOP if EXPIRED in relevant else FAULT if FAILED in relevant
                    else DEGRADED if snapshot.not_ok() else G_OK)
        assert snapshot.state is expected


# -- config and specs ---------------------------------------------------------------------------------------


def test_build_specs_converts_rates_and_budgets_to_cycles():
    config = no_grace(period_ms=50, output_alive_s=5.0)
    specs = build_specs(config, [("front", 10.0), ("rear", 3.0), ("lidar", None)],
                        [("yolo", 40.0), ("detr", 100.0, 20.0), ("slow", 101.0)], ["jsonl"])
    by_id = {s.id: s for s in specs}
    assert by_id["front"].alive_cycles == 2  # 100 ms: exactly two cycles, not three
    assert by_id["rear"].alive_cycles == 7  # 333 ms
    assert by_id["lidar"].alive_cycles is None
    assert (by_id["yolo"].deadline_cycles, by_id["yolo"].alive_cycles) == (1, None)  # no min_fps: no alive check
    assert (by_id["detr"].deadline_cycles, by_id["detr"].alive_cycles) == (2, 1)
    assert by_id["slow"].deadline_cycles == 3
    assert by_id["jsonl"].alive_cycles == 100
    assert [s.id for s in specs if s.safety_relevant] == ["yolo", "yolo/flow", "detr", "detr/flow",
                                                         "slow", "slow/flow"]
    assert {s.kind for s in specs} == {"source", "model", "flow", "output"}


def test_build_specs_with_explicit_safety_list():
    config = no_grace(safety_relevant=["front", "yolo"])
    specs = build_specs(config, [("front", 10.0)], [("yolo", 40.0), ("aux", 40.0)], ["jsonl"])
    assert [s.id for s in specs if s.safety_relevant] == ["front", "yolo", "yolo/flow"]
    with pytest.raises(ValueError, match="no such entity: lidar"):
        build_specs(no_grace(safety_relevant=["lidar"]), [("front", 10.0)], [], [])
    with pytest.raises(ValueError, match="more than once: x"):
        build_specs(no_grace(), [("x", 10.0)], [("x", 40.0)], [])


def test_cycles_for_rounds_up():
    assert [cycles_for(s, 50) for s in (0.001, 0.05, 0.0500001, 0.1, 0.15, 5.0)] == [1, 1, 2, 2, 3, 100]


@pytest.mark.parametrize("bad", [
    {"period_ms": 19}, {"period_ms": 101}, {"exit_code": 2}, {"exit_code": 0},
    {"on_safe_stop": ["exit", "exit"]}, {"on_safe_stop": ["reboot"]}, {"alive_tolerance_cycles": -1},
    {"unknown_key": 1},
])
def test_config_rejects(bad):
    with pytest.raises(ValidationError):
        no_grace(**bad)


def test_entity_spec_rejects_bad_values():
    with pytest.raises(ValueError):
        EntitySpec("x", "camera")
    with pytest.raises(ValueError):
        EntitySpec("x", "source", alive_cycles=0)


# -- the threaded Supervisor with a virtual clock -----------------------------------------------------------


class Harness:
    """A started, threaded Supervisor on virtual time; `cycle(n, reports)` plays cycle n."""

    def __init__(self, specs, notifier=None, callbacks=(), **config):
        self.time = VirtualTime()
        self.t0 = self.time.clock()
        self.snapshots: list[Snapshot] = []
        self.supervisor = Supervisor(no_grace(**config), specs, notifier=notifier,
                                     clock=self.time.clock, sleep=self.time.sleep,
                                     on_cycle=[self.snapshots.append, *callbacks])
        self.supervisor.start()
        self.time.wait_until_asleep()

    def cycle(self, n: int, *reports: tuple, at: float = 0.5) -> None:
        """Make `reports` at fraction `at` of cycle n, then end cycle n and wait for its step."""
        self.time.set(self.t0 + (n + at) * PERIOD)
        for report in reports:
            kind, entity = report[0], report[1]
            if kind == "checkpoint":
                self.supervisor.checkpoint(entity, report[2], report[3])
            elif kind == "fault":
                self.supervisor.fault(entity, report[2])
            else:
                getattr(self.supervisor, kind)(entity)
        self.time.set(self.t0 + (n + 1) * PERIOD)
        self.time.wait_until_asleep()

    def close(self) -> None:
        self.time.release()
        self.supervisor.stop()
        assert self.supervisor._thread is not None
        assert not self.supervisor._thread.is_alive()

    def changes(self, entity: str) -> list[tuple[int, EntityState]]:
        return [(s.cycle, t.new) for s in self.snapshots for t in s.changed if t.entity == entity]


def test_threaded_supervisor_transitions_at_exact_cycles():
    h = Harness([source(alive=2)], alive_tolerance_cycles=2)
    try:
        for n in range(11):
            h.cycle(n, ("alive", "cam"))
        for n in range(11, 20):
            h.cycle(n)
    finally:
        h.close()
    assert [s.cycle for s in h.snapshots] == list(range(20))
    assert h.changes("cam") == [(13, FAILED), (15, EXPIRED)]
    assert h.supervisor.state is SAFE_STOP
    assert not h.supervisor.healthy
    assert not h.supervisor.detections_valid
    assert h.supervisor.active_actions == {"publish_status", "invalidate_detections", "stop_watchdog_pings",
                                           "exit"}
    assert h.supervisor.wait_for_exit(0) == 3


def test_threaded_supervisor_matches_a_replay_of_its_events():
    recorded: list[Event] = []
    plan = {3: [("begin", "yolo")], 4: [("alive", "cam")], 7: [("end", "yolo"), ("fault", "cam", "x")],
            9: [("checkpoint", "yolo", "capture", ("cam", 1)), ("checkpoint", "yolo", "infer", ("cam", 2))]}
    h = Harness([source(alive=2), model(deadline=2), flow()], latch_safe_stop=False)
    try:
        for n in range(15):
            h.cycle(n, *plan.get(n, []))
            recorded.extend(to_event(n, r) for r in plan.get(n, []))
    finally:
        h.close()
    core = SupervisorCore(no_grace(latch_safe_stop=False), [source(alive=2), model(deadline=2), flow()])
    replayed = [core.step([e for e in recorded if e.cycle == n]) for n in range(15)]
    assert h.snapshots == replayed


@pytest.mark.parametrize("budget_ms", [50, 100, 150])
@pytest.mark.parametrize("at", [0.0, 0.5, 0.999])  # where in its cycle the hung inference begins
def test_threaded_hung_inference_is_safe_stop_within_budget_plus_one_period(budget_ms, at):
    specs = build_specs(no_grace(), [], [("yolo", float(budget_ms))], [])
    deadline = specs[0].deadline_cycles
    assert deadline * PERIOD == pytest.approx(budget_ms / 1000)
    stepped_at: dict[int, float] = {}
    h = Harness(specs, callbacks=[lambda snapshot: stepped_at.setdefault(snapshot.cycle, h.time.clock())])
    begin = 3
    try:
        for n in range(begin):
            h.cycle(n)
        h.cycle(begin, ("begin", "yolo"), at=at)  # never ends
        for n in range(begin + 1, begin + deadline + 3):
            h.cycle(n)
    finally:
        h.close()
    begun_at = h.t0 + (begin + at) * PERIOD
    states = [(s.cycle, s.state) for s in h.snapshots if s.state_changed]
    assert states == [(begin + deadline, SAFE_STOP)]
    safe = h.snapshots[begin + deadline]
    assert safe.entities["yolo"].open_since_cycle == begin
    reaction = stepped_at[safe.cycle] - begun_at
    assert reaction == pytest.approx((deadline + 1 - at) * PERIOD)
    assert budget_ms / 1000 < reaction <= budget_ms / 1000 + PERIOD + 1e-9
    # the step before looked at the work no later than `budget` after its begin, and found it in time
    assert stepped_at[safe.cycle - 1] - begun_at <= budget_ms / 1000 + 1e-9
    assert h.supervisor.heartbeat()["entities"]["yolo"]["open_since_cycle"] == begin
    assert h.supervisor.wait_for_exit(0) == 3


def test_ticks_follow_absolute_deadlines_without_drift():
    work = 0.013  # each step "takes" 13 ms of virtual time

    def slow_callback(_snapshot):
        h.time.advance(work)

    h = Harness([source(alive=100)], callbacks=[slow_callback])
    try:
        for n in range(10):
            h.cycle(n)
    finally:
        h.close()
    assert h.time.sleeps[0] == pytest.approx(PERIOD)
    # after each step the thread sleeps only what is left of the period, so cycle k still ends at t0+(k+1)P
    assert h.time.sleeps[1:11] == pytest.approx([PERIOD - work] * 10)
    assert [s.cycle for s in h.snapshots] == list(range(10))
    assert h.supervisor.late_steps == 0


def test_late_supervisor_catches_up_and_keeps_report_cycles():
    time = VirtualTime()
    t0 = time.clock()
    supervisor = Supervisor(no_grace(alive_tolerance_cycles=0), [source(alive=1)], clock=time.clock)
    supervisor.start(background=False)
    for n in range(8):  # the supervisor does not run during cycles 0..7, the camera reports in every one
        time.set(t0 + (n + 0.5) * PERIOD)
        supervisor.alive("cam")
    time.set(t0 + 8 * PERIOD)
    snapshots = supervisor.poll()
    assert [s.cycle for s in snapshots] == list(range(8))
    assert [s.entities["cam"].last_alive_cycle for s in snapshots] == list(range(8))
    assert all(s.state is G_OK for s in snapshots)  # the supervisor's own delay is not a stall
    assert supervisor.late_steps == 6  # steps 0..5 ran more than a period after their cycle ended


def test_cycle_boundaries_do_not_suffer_float_noise():
    time = VirtualTime(start=1234.567)
    t0 = time.clock()
    supervisor = Supervisor(no_grace(), [source(alive=1)], clock=time.clock)
    supervisor.start(background=False)
    time.set(t0 + 3 * PERIOD)  # 0.15 / 0.05 is 2.9999999999999996 in floats
    supervisor.alive("cam")
    time.set(t0 + 4 * PERIOD)
    snapshots = supervisor.poll()
    assert [s.cycle for s in snapshots] == [0, 1, 2, 3]
    assert snapshots[-1].entities["cam"].last_alive_cycle == 3


def test_failing_callback_is_counted_and_supervision_goes_on(caplog):
    def broken(_snapshot):
        raise RuntimeError("publisher down")

    h = Harness([source(alive=2)], callbacks=[broken], latch_safe_stop=False)
    try:
        for n in range(6):
            h.cycle(n, ("alive", "cam"))
    finally:
        h.close()
    assert [s.cycle for s in h.snapshots] == list(range(6))
    assert h.supervisor.callback_errors == 6
    logged = [r for r in caplog.records if "publisher down" in r.getMessage()]
    assert len(logged) == 1  # rate-limited


def test_supervisor_reset_and_exit_request():
    h = Harness([source(alive=1)], alive_tolerance_cycles=1, on_safe_stop=["publish_status"])
    try:
        h.cycle(0)
        h.cycle(1)  # FAILED: two cycles (0, 1) without alive > alive_cycles 1
        h.cycle(2)  # EXPIRED: the one tolerated failed cycle is used up
        assert h.supervisor.state is SAFE_STOP
        assert h.supervisor.detections_valid  # invalidate_detections is not configured
        assert h.supervisor.exit_code is None  # nor is exit
        h.cycle(3, ("alive", "cam"))
        assert h.supervisor.state is SAFE_STOP  # latched
        h.supervisor.reset()
        h.cycle(4, ("alive", "cam"))
        assert h.supervisor.state is G_OK
        assert h.supervisor.heartbeat()["actions"] == []
    finally:
        h.close()
    assert [(s.cycle, s.state) for s in h.snapshots if s.state_changed] == [(1, FAULT), (2, SAFE_STOP),
                                                                            (4, G_OK)]


def test_reports_are_thread_safe():
    time = VirtualTime()
    supervisor = Supervisor(no_grace(), [source(alive=1), model(deadline=5)], clock=time.clock,
                            max_pending=100_000)
    supervisor.start(background=False)

    def hammer():
        for _ in range(2000):
            supervisor.begin("yolo")
            supervisor.end("yolo")
            supervisor.alive("cam")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.advance(PERIOD)
    (snapshot,) = supervisor.poll()
    assert snapshot.entities["yolo"].faults == 0  # every end found its begin
    assert snapshot.state is G_OK
    assert supervisor.dropped_events == 0


def test_event_queue_is_bounded():
    time = VirtualTime()
    supervisor = Supervisor(no_grace(), [source()], clock=time.clock, max_pending=10)
    supervisor.start(background=False)
    for _ in range(15):
        supervisor.alive("cam")
    assert supervisor.dropped_events == 5
    assert supervisor.heartbeat()["dropped_events"] == 5


def test_supervisor_implements_the_health_reporter_protocol():
    for name in ("alive", "begin", "end", "checkpoint", "fault"):
        expected = inspect.signature(getattr(HealthReporter, name))
        assert inspect.signature(getattr(Supervisor, name)) == expected, name


def test_startup_grace_delays_the_first_alive_failure_exactly():
    # 3000 ms at 50 ms = 60 cycles of grace: a source that never reports, A = 2, tolerance 0, first fails at 62
    core = SupervisorCore(WatchdogConfig(alive_tolerance_cycles=0), [source(alive=2)])
    states = [core.step([]).entities["cam"].status for _ in range(64)]
    assert states[:62] == [EntityState.OK] * 62
    assert states[62:] == [EntityState.EXPIRED] * 2


def test_startup_grace_does_not_delay_deadlines():
    core = SupervisorCore(WatchdogConfig(), [model(deadline=2)])
    assert core.step([Event(0, "begin", "yolo")]).state is GlobalState.OK
    assert core.step([]).state is GlobalState.OK
    assert core.step([]).state is GlobalState.SAFE_STOP  # step b + D = 2, grace or not
