"""Base class for every config model: unknown keys are errors, values are immutable once loaded."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    # allow_inf_nan=False: `.inf` or 1e400 as a budget, a rate or a timeout would pass a `gt=0` check and
    # overflow later (cycle arithmetic); no number in a config means anything when it is not finite.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
