"""The trial parameters hps understands, and the values each may take.

A study's search space may only name parameters listed here: a typo such as ``beta_2`` is a
submit-time error, not a silently ignored setting. The worker reads these names to build the
optimizer and the warmup schedule; the service reads them to check a search space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OPTIMIZERS: tuple[str, ...] = (
    "adam",
    "adamw",
    "radam",
    "sgd",
    "radam_reference",
    "adam_warmup_reference",
)
"""Optimizer names a trial may ask for: four ``torch.optim`` implementations, then hps's own
versions of the RAdam authors' code and the article's ``AdamWarmup`` (see SCIENCE.md)."""

ADAM_FAMILY: frozenset[str] = frozenset(
    {"adam", "adamw", "radam", "radam_reference", "adam_warmup_reference"}
)
"""Optimizers that take ``beta1``, ``beta2`` and ``eps``."""

WARMUP_SCHEDULES: tuple[str, ...] = ("none", "linear", "untuned_linear", "untuned_exponential")
"""Warmup schedules, applied on top of any optimizer (``worker.schedules``)."""

LR_DECAYS: tuple[str, ...] = ("constant", "cosine", "linear")
"""What the learning rate does after warmup, until the last step."""
LR_DECAY_STARTS: tuple[str, ...] = ("after_warmup", "start")
"""Where a decay starts: when the warmup ends, or at step 1 so that it spans the whole run."""

Kind = Literal["float", "int", "bool", "choice"]


@dataclass(frozen=True)
class ParamDomain:
    """The values one trial parameter may take: a kind and optional open/closed bounds.

    A ``choice`` takes one of the strings in ``choices``; ``noun`` names it in messages.
    """

    kind: Kind
    choices: tuple[str, ...] = ()
    noun: str = ""
    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    default: object = None
    help: str = ""

    def problem(self, value: object) -> str | None:
        """Return why ``value`` is outside this domain (``"must be < 1"``), or None if it fits."""
        if self.kind == "choice":
            if value not in self.choices:
                known = ", ".join(self.choices)
                return f"has unknown {self.noun} {value!r}; choose from {known}"
            return None
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, not {value!r}"
        if self.kind == "int" and not float(value).is_integer():
            return f"must be a whole number, not {value!r}"
        if self.ge is not None and value < self.ge:
            return f"must be >= {self.ge:g}"
        if self.gt is not None and value <= self.gt:
            return f"must be > {self.gt:g}"
        if self.lt is not None and value >= self.lt:
            return f"must be < {self.lt:g}"
        return None


PARAMS: dict[str, ParamDomain] = {
    "optimizer": ParamDomain(
        "choice", choices=OPTIMIZERS, noun="optimizer", help="which optimizer trains the trial"
    ),
    "lr": ParamDomain("float", gt=0.0, help="peak learning rate"),
    "warmup_steps": ParamDomain(
        "int",
        ge=0,
        default=0,
        help="warmup length in steps for the linear schedule and adam_warmup_reference (0 = none)",
    ),
    # Default "linear", so that a spec naming only warmup_steps keeps its meaning.
    "warmup_schedule": ParamDomain(
        "choice",
        choices=WARMUP_SCHEDULES,
        noun="warmup_schedule",
        default="linear",
        help="untuned_* take their length from beta2; ignored by adam_warmup_reference",
    ),
    "lr_decay": ParamDomain(
        "choice",
        choices=LR_DECAYS,
        noun="lr_decay",
        default="constant",
        help="after warmup: hold the lr, or decay it to 0 at the end of training",
    ),
    "lr_decay_start": ParamDomain(
        "choice",
        choices=LR_DECAY_STARTS,
        noun="lr_decay_start",
        default="after_warmup",
        help="start: the decay spans the whole run whatever the warmup, so that warmup is the "
        "only difference between a verdict grid's cells",
    ),
    "beta1": ParamDomain("float", ge=0.0, lt=1.0, default=0.9, help="Adam family only"),
    "beta2": ParamDomain("float", ge=0.0, lt=1.0, default=0.999, help="Adam family only"),
    "eps": ParamDomain("float", gt=0.0, default=1e-8, help="Adam family only"),
    "weight_decay": ParamDomain("float", ge=0.0, default=0.0),
    "momentum": ParamDomain("float", ge=0.0, lt=1.0, default=0.9, help="SGD only"),
    "nesterov": ParamDomain("bool", default=False, help="SGD only"),
    "degenerated_to_sgd": ParamDomain(
        "bool",
        default=False,
        help="radam_reference only: momentum-SGD steps before rectification instead of none",
    ),
    "decoupled_weight_decay": ParamDomain(
        "bool", default=False, help="radam only: p -= lr*wd*p instead of L2 on the gradient"
    ),
}
"""Every parameter a search space may name, with its domain and the value used when absent."""

REQUIRED_PARAMS: tuple[str, ...] = ("optimizer", "lr")
"""Parameters every trial needs; they may not carry a condition."""
