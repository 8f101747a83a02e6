"""The trial parameters hps understands, and the values each may take.

A study's search space may only name parameters listed here: a typo such as ``beta_2`` is a
submit-time error, not a silently ignored setting. The worker reads these names to build the
optimizer and the warmup schedule; the service reads them to check a search space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "radam", "sgd")
"""Optimizer names a trial may ask for (``torch.optim`` implementations)."""

ADAM_FAMILY: frozenset[str] = frozenset({"adam", "adamw", "radam"})
"""Optimizers that take ``beta1``, ``beta2`` and ``eps``."""

Kind = Literal["float", "int", "bool", "optimizer"]


@dataclass(frozen=True)
class ParamDomain:
    """The values one trial parameter may take: a kind and optional open/closed bounds."""

    kind: Kind
    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    default: object = None
    help: str = ""

    def problem(self, value: object) -> str | None:
        """Return why ``value`` is outside this domain (``"must be < 1"``), or None if it fits."""
        if self.kind == "optimizer":
            if value not in OPTIMIZERS:
                return f"has unknown optimizer {value!r}; choose from {', '.join(OPTIMIZERS)}"
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
    "optimizer": ParamDomain("optimizer", help="which optimizer trains the trial"),
    "lr": ParamDomain("float", gt=0.0, help="peak learning rate"),
    "warmup_steps": ParamDomain(
        "int", ge=0, default=0, help="linear warmup length in steps (0 = none)"
    ),
    "beta1": ParamDomain("float", ge=0.0, lt=1.0, default=0.9, help="Adam family only"),
    "beta2": ParamDomain("float", ge=0.0, lt=1.0, default=0.999, help="Adam family only"),
    "eps": ParamDomain("float", gt=0.0, default=1e-8, help="Adam family only"),
    "weight_decay": ParamDomain("float", ge=0.0, default=0.0),
    "momentum": ParamDomain("float", ge=0.0, lt=1.0, default=0.9, help="SGD only"),
    "nesterov": ParamDomain("bool", default=False, help="SGD only"),
}
"""Every parameter a search space may name, with its domain and the value used when absent."""

REQUIRED_PARAMS: tuple[str, ...] = ("optimizer", "lr")
"""Parameters every trial needs; they may not carry a condition."""
