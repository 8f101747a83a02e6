"""scikit-learn's bundled 8x8 digits: a Post-LN Transformer over rows, and an MLP control.

The data ships inside scikit-learn (nothing is downloaded). A fixed fifth of the images is held
out, the same split for every seed and every trial, so held-out losses are comparable across
seeds; a seed fixes the initial weights and the order of the training batches (paired seeds).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import torch
from torch import nn

from api_schemas.workloads import DigitsMLPConfig, DigitsTransformerConfig, TrainingConfig
from worker.workloads.sort_task import Batch

CLASSES = 10
ROWS = 8
"""An image is 8 rows of 8 pixels: 8 tokens of width 8 for the Transformer."""
HELD_OUT_FRACTION = 0.2
_SPLIT_SEED = 20_200_417
"""Fixes the train / held-out split; part of the workload's definition, not a trial's seed."""


@functools.cache
def _split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, held-out images, held-out labels); pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits  # imported here: it is slow and only this needs it

    digits = load_digits()
    images = torch.from_numpy(digits.data).to(torch.float32) / 16.0
    labels = torch.from_numpy(digits.target).to(torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    n_held_out = round(HELD_OUT_FRACTION * len(labels))
    held_out, train = order[:n_held_out], order[n_held_out:]
    return images[train], labels[train], images[held_out], labels[held_out]


def train_batches(config: TrainingConfig, data_seed: int) -> Iterator[Batch]:
    """Endless epochs over the training images, each in an order drawn from ``data_seed``.

    Images are flat (batch, 64); the Transformer reshapes them to rows itself. The last partial
    batch of an epoch is dropped so every step sees ``batch_size`` images.
    """
    images, labels, _, _ = _split()
    generator = torch.Generator().manual_seed(data_seed)
    batch_size = min(config.batch_size, len(labels))
    while True:
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield images[index], labels[index]


def eval_batches(_config: TrainingConfig, _data_seed: int) -> list[Batch]:
    """The whole held-out fifth, as one batch: the same for every seed."""
    _, _, images, labels = _split()
    return [(images, labels)]


class DigitsMLPModel(nn.Module):
    """64 pixels -> ``hidden`` ReLU layers -> 10 logits."""

    def __init__(self, config: DigitsMLPConfig) -> None:
        super().__init__()
        widths = [ROWS * ROWS, *config.hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], CLASSES))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map (batch, 64) pixels to (batch, 10) logits."""
        logits: torch.Tensor = self.net(images)
        return logits


class DigitsTransformerModel(nn.Module):
    """Each row of 8 pixels is a token; a Post-LN encoder; mean over tokens; a linear head."""

    def __init__(self, config: DigitsTransformerConfig) -> None:
        super().__init__()
        self.row_embedding = nn.Linear(ROWS, config.d_model)
        self.position_embedding = nn.Embedding(ROWS, config.d_model)
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.n_heads,
            config.dim_feedforward,
            dropout=0.0,  # dropout would draw from the global RNG and blur the optimizer signal
            batch_first=True,
            norm_first=False,  # Post-LN: the form that needs warmup
        )
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(config.d_model, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map (batch, 64) pixels to (batch, 10) logits."""
        rows = images.view(-1, ROWS, ROWS)
        positions = torch.arange(ROWS, device=images.device)
        h = self.row_embedding(rows) + self.position_embedding(positions)
        logits: torch.Tensor = self.head(self.encoder(h).mean(dim=1))
        return logits
