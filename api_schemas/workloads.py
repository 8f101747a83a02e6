"""Workload specs: which model and data a trial trains, and their sizes.

The worker owns the torch code; this module owns the configuration so the service can validate
it at submit time. Each built-in workload is one pydantic model told apart by ``name``. Any
other name is a *plugin* workload: a third party registers it on the workers through the
``hps.workloads`` entry-point group, and its config is checked there, not here (the service
never imports the code that trains).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

PLUGIN_TAG = "plugin"
_PLUGIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)+")
"""The union tag of a workload whose name is not built in."""


class TrainingConfig(BaseModel):
    """What every workload has: how long a seed trains, how it reports, at what precision."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=32, ge=1, le=65536)
    steps: int = Field(default=300, ge=1, le=1_000_000, description="optimizer steps per seed")
    report_every: int = Field(default=25, ge=1, description="steps between reports")
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="bf16 runs the forward pass under autocast on CUDA; elsewhere it is fp32",
    )
    compile: bool = Field(
        default=False,
        description="wrap each seed's model in torch.compile: a compile (tens of seconds) per "
        "trial, repaid by long runs on a GPU; results differ from eager in the last digits",
    )


class EncoderConfig(TrainingConfig):
    """The sizes of a Transformer encoder, shared by the workloads that train one."""

    n_layers: int = Field(default=6, ge=1, le=48)
    d_model: int = Field(default=64, ge=4, le=4096)
    n_heads: int = Field(default=4, ge=1, le=64)
    dim_feedforward: int = Field(default=128, ge=4, le=16384)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})"
            )
        return self


class SortTaskConfig(EncoderConfig):
    """A Transformer encoder that learns to sort ``seq_len`` tokens from a vocabulary.

    The defaults are SCIENCE.md's sizes where warmup matters: on Post-LN, Adam at lr 1e-2 without
    warmup collapses to chance loss in 5 seeds of 5, 100 warmup steps fix it, and RAdam trains
    without warmup; a seed takes about 10 s on one CPU thread. (With 4 layers Adam trains
    without warmup: the effect needs the depth.)
    """

    seq_len: int = Field(default=16, ge=2, le=512)
    vocab: int = Field(default=32, ge=2, le=65536)
    eval_batches: int = Field(default=4, ge=1, le=1000, description="held-out batches at the end")


class DigitsTransformerConfig(EncoderConfig):
    """scikit-learn's bundled 8x8 digits, each image's 8 rows read as 8 tokens of 8 pixels.

    A fixed fifth of the 1,797 images is held out (the same split for every seed); a seed fixes
    the initial weights and the order of the training batches. Measured with the defaults (3
    seeds, β2 = 0.98): Adam at lr 3e-3 without warmup collapses in 3 of 3 seeds, 100 warmup
    steps or RAdam without warmup reach 0.23-0.49 held-out loss (chance: ln 10 = 2.30).
    """


class DigitsMLPConfig(TrainingConfig):
    """scikit-learn's bundled digits as 64 pixels into a few ReLU layers: the negative control.

    An MLP has no attention softmax and no residual stream to blow up, so warmup should not
    matter here; a study that finds a warmup effect on it has found a bug, not a science result.
    """

    hidden: list[int] = Field(default=[128, 128], min_length=1, max_length=16)

    @model_validator(mode="after")
    def _positive_widths(self) -> Self:
        if any(not 1 <= width <= 65536 for width in self.hidden):
            raise ValueError("every hidden width must be between 1 and 65536")
        return self


class PluginConfig(TrainingConfig):
    """A plugin workload's config: the training fields above plus whatever the plugin reads."""

    model_config = ConfigDict(extra="allow")


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


class DigitsTransformer(BaseModel):
    """Post-LN Transformer encoder on bundled digits, rows as tokens: the effect on real data."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["digits_transformer"] = "digits_transformer"
    config: DigitsTransformerConfig = Field(default_factory=DigitsTransformerConfig)


class DigitsMLP(BaseModel):
    """A ReLU MLP on bundled digits: the negative control, with no warmup effect expected."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["digits_mlp"] = "digits_mlp"
    config: DigitsMLPConfig = Field(default_factory=DigitsMLPConfig)


WORKLOAD_NAMES: tuple[str, ...] = (
    "postln_transformer",
    "preln_transformer",
    "digits_transformer",
    "digits_mlp",
)
"""The built-in workloads, in the order the docs list them."""


class PluginWorkload(BaseModel):
    """A workload registered on the workers by a third party (entry-point group ``hps.workloads``).

    The service cannot check the config beyond the training fields: the worker that builds it
    does, and a config the plugin refuses fails the trial with the plugin's message.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        max_length=100,
        description="the entry-point name, qualified with a dot (e.g. ``mypkg.tiny_lm``)",
        # In the schema only (the validator below words the error): without it a built-in
        # workload also matches this branch of the union, and the schema's oneOf fails.
        json_schema_extra={"pattern": f"^{_PLUGIN_NAME.pattern}$"},
    )
    config: PluginConfig = Field(default_factory=PluginConfig)

    @field_validator("name")
    @classmethod
    def _qualified(cls, name: str) -> str:
        # Built-in names are bare and plugin names are qualified, so a misspelt built-in name
        # is refused here instead of failing every trial on the workers.
        if not _PLUGIN_NAME.fullmatch(name):
            raise ValueError(
                f"unknown workload {name!r}: the built-in ones are {', '.join(WORKLOAD_NAMES)}; "
                "a plugin workload's name has a dot (e.g. 'mypkg.tiny_lm') and is registered "
                "on the workers in the 'hps.workloads' entry-point group"
            )
        return name


def _workload_tag(value: Any) -> str:
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return name if name in WORKLOAD_NAMES else PLUGIN_TAG


Workload = Annotated[
    Annotated[PostLNTransformer, Tag("postln_transformer")]
    | Annotated[PreLNTransformer, Tag("preln_transformer")]
    | Annotated[DigitsTransformer, Tag("digits_transformer")]
    | Annotated[DigitsMLP, Tag("digits_mlp")]
    | Annotated[PluginWorkload, Tag(PLUGIN_TAG)],
    Discriminator(_workload_tag),
]
"""Any workload spec: a built-in one by its ``name``, else a plugin."""
WORKLOAD_TAGS: frozenset[str] = frozenset((*WORKLOAD_NAMES, PLUGIN_TAG))
"""Every union tag pydantic may put into an error's location."""


def chance_loss(workload: Workload) -> float | None:
    """Cross-entropy of the uniform prediction, what a failed run records; None for a plugin.

    ln(vocab) for the sort task, ln(10) for the digits; the worker's ``Task`` says the same.
    """
    if isinstance(workload.config, SortTaskConfig):
        return math.log(workload.config.vocab)
    if isinstance(workload, DigitsTransformer | DigitsMLP):
        return math.log(10)
    return None
