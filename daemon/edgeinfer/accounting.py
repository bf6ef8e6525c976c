"""Where every frame went, per model: in = out + dropped (by reason) + in flight.

`in` is counted where a frame enters the model's slot (mailbox.FrameSlots), `out` where a record is published,
drops where they happen (an unread frame overwritten by a newer one, a frame the preprocessing refused, a
result too old to publish, a result after --max-frames). What is neither is in flight: waiting in the slot, or
taken by the worker and not yet finished. The heartbeat carries these; the run's summary checks that they add up.
"""

from __future__ import annotations

from typing import Any

# the drop reasons, as they appear in the heartbeat's "frames.<model>.dropped"
OVERWRITTEN = "overwritten"  # latest-frame semantics: a newer frame replaced an unread one in the slot
BAD_FRAME = "bad_frame"  # the preprocessing refused the image
STALE = "stale"  # older than max_age_ms when its result was ready
MAX_FRAMES = "max_frames"  # finished after --max-frames was reached
RELOAD = "reload"  # in flight when a reload replaced the pipeline
STOP = "stop"  # in flight when the daemon stopped


def worker_account(worker: Any) -> dict[str, Any]:
    stats, slots = worker.stats, worker.inbox
    received = sum(slots.received.values())
    overwritten = sum(slots.drops.values())
    dropped = {OVERWRITTEN: overwritten, BAD_FRAME: stats.bad_frames, STALE: stats.stale_dropped,
               MAX_FRAMES: stats.unclaimed}
    finished = stats.published + stats.bad_frames + stats.stale_dropped + stats.unclaimed
    in_flight = slots.pending() + max(0, stats.taken - finished)
    return {"in": received, "out": stats.published, "dropped": dropped, "in_flight": in_flight}


def frame_accounts(pipeline: Any) -> dict[str, dict[str, Any]]:
    return {w.id: worker_account(w) for w in pipeline.workers}


def settle(accounts: dict[str, dict[str, Any]], reason: str) -> dict[str, dict[str, Any]]:
    """The accounts of a pipeline that stopped: what was in flight is dropped for `reason`."""
    settled = {}
    for model, a in accounts.items():
        dropped = dict(a["dropped"])
        if a["in_flight"]:
            dropped[reason] = dropped.get(reason, 0) + a["in_flight"]
        settled[model] = {"in": a["in"], "out": a["out"], "dropped": dropped, "in_flight": 0}
    return settled


def add(total: dict[str, dict[str, Any]], more: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-model sums (a reload replaces the pipeline; the process's accounts go on)."""
    out = {m: {"in": a["in"], "out": a["out"], "dropped": dict(a["dropped"]), "in_flight": a["in_flight"]}
           for m, a in total.items()}
    for model, a in more.items():
        t = out.setdefault(model, {"in": 0, "out": 0, "dropped": {}, "in_flight": 0})
        t["in"] += a["in"]
        t["out"] += a["out"]
        t["in_flight"] += a["in_flight"]
        for reason, n in a["dropped"].items():
            t["dropped"][reason] = t["dropped"].get(reason, 0) + n
    return out


def unbalanced(accounts: dict[str, dict[str, Any]]) -> list[str]:
    """Models whose frames do not add up, each as a line saying by how much; [] when every frame is accounted."""
    lines = []
    for model, a in accounts.items():
        dropped = sum(a["dropped"].values())
        if a["in"] != a["out"] + dropped + a["in_flight"]:
            lines.append(f"model '{model}': {a['in']} in != {a['out']} out + {dropped} dropped + "
                         f"{a['in_flight']} in flight")
    return lines


def summary(accounts: dict[str, dict[str, Any]]) -> str:
    parts = []
    for model, a in accounts.items():
        drops = ", ".join(f"{n} {reason}" for reason, n in a["dropped"].items() if n)
        parts.append(f"{model}: {a['in']} in, {a['out']} out, {sum(a['dropped'].values())} dropped"
                     + (f" ({drops})" if drops else ""))
    return "; ".join(parts)
