"""A small Transformer encoder for per-position classification, in Post-LN or Pre-LN form.

Post-LN (``norm_first=False``, the original Transformer) has large gradients near the output at
initialisation and needs warmup with Adam; Pre-LN (``norm_first=True``) much less
(Xiong et al., 2020). Everything else is identical, so the two workloads are a controlled contrast.
"""

from __future__ import annotations

import torch
from torch import nn

from api_schemas.workloads import SortTaskConfig
from worker.workloads.seeding import build_seeded


class SortTransformer(nn.Module):
    """Token + learned position embeddings, a bidirectional encoder, a linear head to the vocab."""

    def __init__(self, config: SortTaskConfig, *, norm_first: bool) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab, config.d_model)
        self.position_embedding = nn.Embedding(config.seq_len, config.d_model)
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.n_heads,
            config.dim_feedforward,
            dropout=0.0,  # dropout would draw from the global RNG and blur the optimizer signal
            batch_first=True,
            norm_first=norm_first,
        )
        self.encoder = nn.TransformerEncoder(
            layer,
            config.n_layers,
            # Pre-LN leaves the residual stream un-normalised; the final norm is part of the design.
            norm=nn.LayerNorm(config.d_model) if norm_first else None,
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(config.d_model, config.vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map (batch, seq_len) token ids to (batch, seq_len, vocab) logits."""
        positions = torch.arange(tokens.size(1), device=tokens.device)
        h = self.token_embedding(tokens) + self.position_embedding(positions)
        logits: torch.Tensor = self.head(self.encoder(h))
        return logits


def build_sort_transformer(
    config: SortTaskConfig, *, norm_first: bool, init_seed: int
) -> SortTransformer:
    """Build the model on the CPU with weights fixed by ``init_seed``."""
    return build_seeded(init_seed, lambda: SortTransformer(config, norm_first=norm_first))
