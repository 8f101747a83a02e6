"""``lr_decay_start: start``: one decay over the whole run, whatever the warmup."""

from __future__ import annotations

import pytest

from worker.schedules import trial_factor

STEPS = 200


@pytest.mark.parametrize(
    "warmup",
    [
        {"warmup_steps": 50},
        {"warmup_schedule": "untuned_linear", "beta2": 0.98},
        {"optimizer": "adam_warmup_reference", "warmup_steps": 50},
    ],
)
def test_the_decay_is_the_same_for_every_warmup_once_the_warmup_is_over(
    warmup: dict[str, object],
) -> None:
    base = {"optimizer": "adam", "lr_decay": "cosine", "lr_decay_start": "start"}
    plain = trial_factor({**base, "warmup_steps": 0}, STEPS)
    warmed = trial_factor({**base, **warmup}, STEPS)
    # From the end of the longest warmup (100 steps) the two factors agree step by step.
    assert [warmed(s) for s in range(101, STEPS + 1)] == pytest.approx(
        [plain(s) for s in range(101, STEPS + 1)]
    )
    assert plain(1) == 1.0 and plain(STEPS) < 0.01


def test_by_default_the_decay_starts_after_the_warmup() -> None:
    params = {"optimizer": "adam", "lr_decay": "cosine", "warmup_steps": 50}
    late = trial_factor(params, STEPS)
    whole = trial_factor({**params, "lr_decay_start": "start"}, STEPS)
    assert late(51) == 1.0 and whole(51) < 1.0
