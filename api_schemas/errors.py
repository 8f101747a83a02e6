"""The body of every error the service returns."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FieldError(BaseModel):
    """One problem with a request, naming the field (dotted path) it is about."""

    field: str = Field(description="e.g. search_space.beta2.high; empty for the whole body")
    message: str = Field(description="e.g. search_space.beta2.high must be < 1")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a stable machine-readable code and a sentence for people."""

    error: str = Field(description="e.g. invalid_request, not_found, lease_conflict")
    message: str
    errors: list[FieldError] = Field(default_factory=list)
