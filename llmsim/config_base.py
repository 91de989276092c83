"""Base class for every pydantic model of the scenario: strict keys, frozen after validation."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """extra="forbid" (unknown keys are errors), frozen, no coercion surprises on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
