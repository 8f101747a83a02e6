"""The wire contract between hps's clients, service and workers: pydantic models only.

This package must not import torch, optuna, sqlalchemy or fastapi (a test checks it), so that
clients and workers can use it without the service's dependencies.
"""

from api_schemas.errors import ErrorBody, FieldError
from api_schemas.params import ADAM_FAMILY, LR_DECAYS, OPTIMIZERS, PARAMS, WARMUP_SCHEDULES
from api_schemas.search_space import (
    CategoricalParam,
    Condition,
    FixedParam,
    FloatParam,
    IntParam,
    Param,
    Scalar,
    SearchSpace,
    contains,
    grid_cells,
)
from api_schemas.studies import (
    Objective,
    PrunerSpec,
    SamplerSpec,
    StudyRead,
    StudySpec,
    StudyState,
    TrialCounts,
)
from api_schemas.trials import (
    Failure,
    FailureKind,
    IntermediateReport,
    LeaseRequest,
    PruneDecision,
    SeedResult,
    TrialAssignment,
    TrialRead,
    TrialResult,
    TrialState,
)
from api_schemas.workloads import PostLNTransformer, PreLNTransformer, SortTaskConfig, Workload

__all__ = [
    "ADAM_FAMILY",
    "LR_DECAYS",
    "OPTIMIZERS",
    "PARAMS",
    "WARMUP_SCHEDULES",
    "CategoricalParam",
    "Condition",
    "ErrorBody",
    "Failure",
    "FailureKind",
    "FieldError",
    "FixedParam",
    "FloatParam",
    "IntParam",
    "IntermediateReport",
    "LeaseRequest",
    "Objective",
    "Param",
    "PostLNTransformer",
    "PreLNTransformer",
    "PruneDecision",
    "PrunerSpec",
    "SamplerSpec",
    "Scalar",
    "SearchSpace",
    "SeedResult",
    "SortTaskConfig",
    "StudyRead",
    "StudySpec",
    "StudyState",
    "TrialAssignment",
    "TrialCounts",
    "TrialRead",
    "TrialResult",
    "TrialState",
    "Workload",
    "contains",
    "grid_cells",
]
