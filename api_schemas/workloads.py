"""Workload specs: which model and data a trial trains, and their sizes.

The worker owns the torch code; this module owns the configuration so the service can validate
it at submit time. Each workload is one pydantic model told apart by ``name``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SortTaskConfig(BaseModel):
    """A Transformer encoder that learns to sort ``seq_len`` tokens from a vocabulary.

    The defaults are SCIENCE.md's sizes where warmup matters: on Post-LN, Adam at lr 1e-2 without
    warmup collapses to chance loss in 5 seeds of 5, 100 warmup steps fix it, and RAdam trains
    without warmup; a seed takes about 10 s on one CPU thread. (With 4 layers Adam trains
    without warmup: the effect needs the depth.)
    """

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(default=16, ge=2, le=512)
    vocab: int = Field(default=32, ge=2, le=65536)
    n_layers: int = Field(default=6, ge=1, le=48)
    d_model: int = Field(default=64, ge=4, le=4096)
    n_heads: int = Field(default=4, ge=1, le=64)
    dim_feedforward: int = Field(default=128, ge=4, le=16384)
    batch_size: int = Field(default=32, ge=1, le=4096)
    steps: int = Field(default=300, ge=1, le=1_000_000)
    eval_batches: int = Field(default=4, ge=1, le=1000, description="held-out batches at the end")
    report_every: int = Field(default=25, ge=1, description="steps between reports")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})"
            )
        return self


class PostLNTransformer(BaseModel):
    """Post-LN Transformer encoder (``norm_first=False``) on the synthetic sort task."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["postln_transformer"] = "postln_transformer"
    config: SortTaskConfig = Field(default_factory=SortTaskConfig)


class PreLNTransformer(BaseModel):
    """Pre-LN Transformer encoder (``norm_first=True``): the contrast that needs little warmup."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["preln_transformer"] = "preln_transformer"
    config: SortTaskConfig = Field(default_factory=SortTaskConfig)


Workload = Annotated[PostLNTransformer | PreLNTransformer, Field(discriminator="name")]
WORKLOAD_NAMES: tuple[str, ...] = ("postln_transformer", "preln_transformer")
