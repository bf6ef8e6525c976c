"""Watchdog configuration and the supervised entities derived from the pipeline's config.

`WatchdogConfig` is the `watchdog:` section of the YAML. `build_specs` turns rates (fps) and budgets (ms)
into whole supervision cycles, so the pipeline never does that arithmetic itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from ..schema import StrictModel

SafeStopAction = Literal["publish_status", "invalidate_detections", "stop_watchdog_pings", "exit"]
EntityKind = Literal["source", "model", "output", "flow"]

ALL_SAFE_STOP_ACTIONS: tuple[SafeStopAction, ...] = (
    "publish_status",
    "invalidate_detections",
    "stop_watchdog_pings",
    "exit",
)
CONFIG_ERROR_EXIT_CODE = 2  # what the CLI returns for a bad config; the safe-stop code must differ


class WatchdogConfig(StrictModel):
    period_ms: int = Field(50, ge=20, le=100, description="supervision cycle on the monotonic clock")
    alive_tolerance_cycles: int = Field(
        2, ge=0, description="failed alive cycles tolerated before EXPIRED (0: the first failed cycle expires)"
    )
    deadline_tolerance_cycles: int = Field(
        0, ge=0, description="failed deadline cycles tolerated before EXPIRED (0: the first failed cycle expires)"
    )
    logical_tolerance_cycles: int = Field(
        0, ge=0, description="cycles with order violations tolerated before EXPIRED (0: the first one expires)"
    )
    fault_tolerance_cycles: int = Field(
        2, ge=0, description="cycles with reported faults tolerated before EXPIRED (0: the first one expires)"
    )
    startup_grace_ms: int = Field(
        3000, ge=0, le=600_000, description="alive checks start failing only after this long: a camera or RTSP "
        "stream may take a few seconds to open, and that is not a stall"
    )
    safety_relevant: list[str] | None = Field(
        None, description="entity ids whose failure is a FAULT / SAFE_STOP; None means every model"
    )
    latch_safe_stop: bool = Field(True, description="SAFE_STOP holds until an explicit reset")
    on_safe_stop: list[SafeStopAction] = Field(default_factory=lambda: list(ALL_SAFE_STOP_ACTIONS))
    exit_code: int = Field(3, ge=1, le=255, description="process exit status after a safe stop")
    output_alive_s: float = Field(5.0, gt=0, le=86_400, description="an output must publish at least this often")
    live_source_min_fps: float | None = Field(
        1.0, ge=0.001, le=10_000, description="alive check of live sources (camera, stream, ...) without their own "
        "min_fps, and of the models reading only such sources: a camera that never delivers is not OK; null: off"
    )

    @field_validator("on_safe_stop")
    @classmethod
    def _unique_actions(cls, actions: list[str]) -> list[str]:
        if len(set(actions)) != len(actions):
            raise ValueError("actions must not repeat")
        return actions

    @field_validator("safety_relevant")
    @classmethod
    def _unique_ids(cls, ids: list[str] | None) -> list[str] | None:
        if ids is not None and len(set(ids)) != len(ids):
            raise ValueError("entity ids must not repeat")
        return ids

    @field_validator("exit_code")
    @classmethod
    def _distinct_exit_code(cls, code: int) -> int:
        if code == CONFIG_ERROR_EXIT_CODE:
            raise ValueError(f"{CONFIG_ERROR_EXIT_CODE} is reserved for configuration errors")
        return code


@dataclass(frozen=True)
class EntitySpec:
    """One supervised entity. Cycle counts are whole supervision periods; None switches a check off."""

    id: str
    kind: EntityKind
    alive_cycles: int | None = None  # FAILED after more than this many cycles without an alive indication
    deadline_cycles: int | None = None  # a `begin` at cycle b must `end` by cycle b + deadline_cycles
    safety_relevant: bool = False
    budget_ms: float | None = None  # for messages only: what deadline_cycles came from
    min_fps: float | None = None  # for messages only: what alive_cycles came from (sources, models)

    def __post_init__(self) -> None:
        if self.kind not in ("source", "model", "output", "flow"):
            raise ValueError(f"entity {self.id!r}: unknown kind {self.kind!r}")
        for name in ("alive_cycles", "deadline_cycles"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"entity {self.id!r}: {name} must be >= 1, got {value}")


def flow_id(model_id: str) -> str:
    """The id of the logical-order entity (capture -> infer -> publish) belonging to a model."""
    return f"{model_id}/flow"


def cycles_for(seconds: float, period_ms: int) -> int:
    """Whole cycles covering `seconds` (rounded up, at least 1)."""
    # The epsilon keeps exact multiples (0.1 s at 50 ms = 2.0000000000000004) from rounding up a cycle.
    return max(1, math.ceil(seconds * 1000.0 / period_ms - 1e-9))


ModelEntry = tuple[str, float | None] | tuple[str, float | None, float | None]


def build_specs(
    config: WatchdogConfig,
    sources: Sequence[tuple[str, float | None]],
    models: Sequence[ModelEntry],
    outputs: Sequence[str],
) -> list[EntitySpec]:
    """Entities for a pipeline.

    sources: (id, min_fps); min_fps None or 0 switches alive supervision off for that source.
    models: (id, budget_ms) or (id, budget_ms, min_fps). The budget becomes the deadline; budget None switches
      the deadline off. With min_fps the model must also finish inferences at least that often; without it the
      model has no alive check, so a dead camera shows as that source's failure, not as a failing model.
    outputs: ids; each must publish at least every `output_alive_s`.
    Each model also gets a flow entity, `flow_id(model)`, for the order capture -> infer -> publish; it is
    safety-relevant when its model is (or when listed itself).
    Raises ValueError for duplicate ids or for `safety_relevant` ids that name no entity.
    """
    period = config.period_ms
    source_alive = {sid: (cycles_for(1.0 / fps, period) if fps else None) for sid, fps in sources}
    relevant = set(config.safety_relevant) if config.safety_relevant is not None else None

    def is_relevant(entity_id: str, kind: str, model_id: str | None = None) -> bool:
        if relevant is None:
            return kind in ("model", "flow")
        return entity_id in relevant or (model_id is not None and model_id in relevant)

    specs = [
        EntitySpec(sid, "source", alive_cycles=alive, safety_relevant=is_relevant(sid, "source"),
                   min_fps=dict(sources)[sid] or None)
        for sid, alive in source_alive.items()
    ]
    for entry in models:
        mid, budget_ms = entry[0], entry[1]
        min_fps = entry[2] if len(entry) > 2 else None
        alive = cycles_for(1.0 / min_fps, period) if min_fps else None
        deadline = cycles_for(budget_ms / 1000.0, period) if budget_ms else None
        specs.append(
            EntitySpec(mid, "model", alive_cycles=alive, deadline_cycles=deadline,
                       safety_relevant=is_relevant(mid, "model"), budget_ms=budget_ms or None,
                       min_fps=min_fps or None)
        )
        fid = flow_id(mid)
        specs.append(EntitySpec(fid, "flow", safety_relevant=is_relevant(fid, "flow", model_id=mid)))
    output_alive = cycles_for(config.output_alive_s, period)
    specs += [
        EntitySpec(oid, "output", alive_cycles=output_alive, safety_relevant=is_relevant(oid, "output"))
        for oid in outputs
    ]

    ids = [s.id for s in specs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"watchdog: entity ids used more than once: {', '.join(duplicates)}")
    if relevant is not None:
        unknown = sorted(relevant - set(ids))
        if unknown:
            raise ValueError(f"watchdog.safety_relevant: no such entity: {', '.join(unknown)}")
    return specs
