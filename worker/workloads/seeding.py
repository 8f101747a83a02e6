"""Seeds for paired runs: one seed, independent named streams, the same on every machine."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit generator seed for one named stream of ``seed``, the same on every machine."""
    digest = hashlib.blake2b(f"{seed}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def build_seeded(init_seed: int, factory: Callable[[], M]) -> M:
    """Call ``factory`` with the global CPU generator seeded by ``init_seed``, on the CPU.

    ``nn`` modules initialise from the global CPU generator, so the build runs inside
    ``fork_rng``: the same seed gives the same weights in every trial, whichever seeds were built
    before it, and the caller's RNG state is left as it was. Only the CPU generator is seeded
    (``torch.manual_seed`` would also reseed every CUDA device).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(init_seed)
        return factory()
