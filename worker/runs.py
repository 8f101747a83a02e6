"""How one seed's run is judged, whichever trainer ran it (sequential or stacked).

Divergence is a result, not a crash: a seed whose mean training loss over a report window is
non-finite or exploded stops training and is recorded as ``diverged`` with the chance loss; so
is a seed whose held-out loss ends at chance (a collapse).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from api_schemas.trials import SeedResult
from worker.workloads import Batch, Task

EXPLODED = 10.0
"""A training loss above EXPLODED times the chance loss is diverged: it will not come back."""
COLLAPSED = 0.9
"""A held-out loss at or above COLLAPSED times the chance loss is a collapse: nothing learned.

Measured on the 6-layer Post-LN sort task: Adam at lr 1e-2 without warmup ends at 0.95-1.0 x
chance, while a model that ignores its input and learns only which tokens each sorted position
tends to hold already reaches 0.71 x chance; 0.9 separates the two.
"""


def window_diverged(mean_loss: float, chance_loss: float) -> bool:
    """Whether a seed's mean training loss over a report window ends its run."""
    return not math.isfinite(mean_loss) or mean_loss > EXPLODED * chance_loss


def to_device(batch: Batch, device: torch.device) -> Batch:
    x, y = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def batch_loss(
    model: nn.Module, batch: Batch, *, autocast: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of a batch, and the logits flattened to (tokens, classes)."""
    x, y = batch
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(x).flatten(0, -2)
    # The loss is taken in fp32 whatever the forward pass ran in.
    return F.cross_entropy(logits.float(), y.flatten()), logits


def evaluate(
    model: nn.Module,
    task: Task,
    device: torch.device,
    *,
    seed: int,
    steps: int,
    diverged: bool,
    autocast: bool,
) -> SeedResult:
    """Held-out loss and per-token accuracy, with failures recorded as chance."""
    failed = SeedResult(
        seed=seed,
        loss=task.chance_loss,
        accuracy=task.chance_accuracy,
        diverged=True,
        steps=steps,
    )
    if diverged:
        return failed
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    n_tokens = 0
    with torch.no_grad():
        for batch in task.eval_batches(seed):
            inputs, targets = to_device(batch, device)
            loss, logits = batch_loss(model, (inputs, targets), autocast=autocast)
            targets = targets.flatten()
            loss_sum += loss * targets.numel()
            correct += (logits.argmax(dim=-1) == targets).sum()
            n_tokens += targets.numel()
    total_loss, total_correct = torch.stack([loss_sum, correct]).tolist()
    loss_value = total_loss / n_tokens
    if not math.isfinite(loss_value) or loss_value >= COLLAPSED * task.chance_loss:
        return failed
    return SeedResult(
        seed=seed,
        loss=min(loss_value, task.chance_loss),
        accuracy=total_correct / n_tokens,
        diverged=False,
        steps=steps,
    )
