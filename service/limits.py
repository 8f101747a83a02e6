"""The operator's limits: on the size of a request body, and on what one study may ask for.

The schema in ``api_schemas`` has static caps (the contract); these are each service's own,
tighter ones (``HPS_MAX_BODY_BYTES``, ``HPS_MAX_TRIALS``, ``HPS_MAX_GRID_CELLS``,
``HPS_MAX_SEEDS_PER_TRIAL``).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_schemas import FieldError, StudySpec
from service.errors import LimitExceeded


@dataclass(frozen=True)
class SpecLimits:
    """Caps on one study, checked at submit (the spec itself is already valid)."""

    max_trials: int
    max_grid_cells: int
    max_seeds_per_trial: int

    def check(self, spec: StudySpec) -> None:
        """Raise LimitExceeded naming every field over its cap."""
        n = spec.n_trials
        assert n is not None  # a valid spec has it (a grid's is its size)
        problems: list[FieldError] = []
        if spec.sampler.type == "grid":
            # A grid runs every cell once, so its size is its trial count: both caps apply.
            cap = min(self.max_grid_cells, self.max_trials)
            if n > cap:
                problems.append(_over("search_space", f"has {n} grid cells", cap))
        elif n > self.max_trials:
            problems.append(_over("n_trials", f"is {n}", self.max_trials))
        if spec.seeds_per_trial > self.max_seeds_per_trial:
            seeds = spec.seeds_per_trial
            problems.append(_over("seeds_per_trial", f"is {seeds}", self.max_seeds_per_trial))
        if problems:
            raise LimitExceeded("; ".join(p.message for p in problems), errors=problems)


def _over(field: str, what: str, cap: int) -> FieldError:
    return FieldError(field=field, message=f"{field} {what}; this service allows at most {cap}")


class BodyTooLarge(HTTPException):
    """Raised while the body is read; an HTTPException so that FastAPI passes it on untouched
    to ``service.http_errors``, which answers 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")


class BodySizeLimit:
    """ASGI middleware: a body over ``max_bytes`` fails with 413 before it is read whole.

    A declared Content-Length over the limit fails before a single byte is read; a body sent
    without one (chunked) fails as soon as the bytes received pass the limit. A route that
    never reads its body is not affected.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        too_large = declared.isdigit() and int(declared) > self.max_bytes
        received = 0

        async def limited() -> Message:
            nonlocal received
            if too_large:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)
