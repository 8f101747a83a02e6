"""Issue 16: the stateful phase of the attack, past the 404s of random ids.

Schemathesis chains operations through the links it infers from the schema (a study's ``id`` in
``POST /v1/studies``'s answer feeds ``GET /v1/studies/{study_id}``, ``…/trials``, ``…/cancel``,
``…/analysis``; a token's ``id`` feeds ``DELETE /v1/tokens/{token_id}``), so sequences reach
objects that exist. On every step: no 5xx, and an answer the schema documents in the shape it
gives. The app is ``tests/service/test_fuzz.py``'s: in-process, a real SQLite file, an admin
token that outlives the fuzzer revoking it. Bounded and repeatable (derandomized).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.transport import Response

from tests.service.test_fuzz import CHECKS, Fuzzed, fuzzed  # noqa: F401  (the fixture)

SEQUENCES = 25
"""State-machine runs of up to 5 steps each: about a minute on two cores."""


def test_chained_requests_on_real_ids_get_no_server_error(fuzzed: Fuzzed) -> None:  # noqa: F811
    machine = fuzzed.schema.as_state_machine()
    on_studies: list[bool] = []  # for each request on one study: whether it found it

    class Attack(machine):  # type: ignore[misc, valid-type]
        def call(self, case: schemathesis.Case, **kwargs: Any) -> Response:
            response = fuzzed.send(case)
            if "study_id" in (case.path_parameters or {}):
                on_studies.append(response.status_code != 404)
            return Response.from_httpx(response, verify=False)

        def validate_response(
            self, response: Response, case: schemathesis.Case, **kwargs: Any
        ) -> None:
            try:
                case.validate_response(response, checks=CHECKS)
            finally:
                fuzzed.ensure_admin()

    Attack.run(
        settings=settings(
            max_examples=SEQUENCES,
            stateful_step_count=5,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # The links took it past the 404s: most requests on a study name one that exists (68 % in
    # this run, against 22 % of the ids the stateless phase draws, which favours small ones).
    found = sum(on_studies) / max(1, len(on_studies))
    print(f"{len(on_studies)} requests on a study, {found:.0%} found it")
    assert len(on_studies) >= SEQUENCES and found > 0.5, (len(on_studies), found)
