"""The base of every config section: unknown keys are errors, assignments validated, floats finite."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from .values import too_large


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated, floats are finite
    (`.inf` or `.nan` is never a meaningful learning rate, penalty or fraction)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _fits_64_bits(cls, v: Any) -> Any:
        if too_large(v):
            raise ValueError("integers must fit in 64 bits (between -2**63 and 2**63 - 1)")
        return v
