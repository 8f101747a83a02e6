"""A trial assignment as the service would hand one out, for tests that train without it."""

from __future__ import annotations

from datetime import UTC, datetime

from api_schemas import TrialAssignment
from api_schemas.search_space import Scalar
from api_schemas.workloads import Workload


def assignment(
    params: dict[str, Scalar],
    workload: Workload,
    seeds: list[int],
    *,
    time_limit_s: float = 3600.0,
) -> TrialAssignment:
    return TrialAssignment(
        trial_id=1,
        study_id=1,
        trial_number=0,
        lease_token="token",
        lease_expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        attempt=1,
        params=params,
        workload=workload,
        seeds=seeds,
        metric="loss",
        time_limit_s=time_limit_s,
    )
