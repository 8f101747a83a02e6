"""The synthetic sort task: read ``seq_len`` random tokens, emit them in sorted order.

Each position is a ``vocab``-way classification trained with cross-entropy, so a model that has
learned nothing scores ln(vocab). All data comes from a ``torch.Generator`` on the CPU: the
same generator seed yields the same batches in the same order on every machine and in every
trial, which is what makes seeds paired across trials.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from api_schemas.workloads import SortTaskConfig

Batch = tuple[torch.Tensor, torch.Tensor]
"""(inputs, targets): int64 tensors of shape (batch_size, seq_len), on the CPU."""


def sort_batch(config: SortTaskConfig, generator: torch.Generator) -> Batch:
    """Draw one batch: uniform random tokens and their sorted sequence."""
    x = torch.randint(config.vocab, (config.batch_size, config.seq_len), generator=generator)
    return x, x.sort(dim=1).values


def train_batches(config: SortTaskConfig, data_seed: int) -> Iterator[Batch]:
    """An endless stream of training batches, fixed by ``data_seed``."""
    generator = torch.Generator().manual_seed(data_seed)
    while True:
        yield sort_batch(config, generator)


def eval_batches(config: SortTaskConfig, data_seed: int) -> list[Batch]:
    """``config.eval_batches`` held-out batches, fixed by ``data_seed``.

    Pass a seed that no training stream uses, so held-out batches are never trained on
    (up to chance repeats of a random sequence, which are rare at the default sizes).
    """
    generator = torch.Generator().manual_seed(data_seed)
    return [sort_batch(config, generator) for _ in range(config.eval_batches)]
