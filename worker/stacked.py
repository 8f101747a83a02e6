"""Train many models of one architecture as one stacked model (principle 10: fill the device).

A ``ModelStack`` holds M models' parameters as one ``(M, P)`` tensor, a row per model, and
takes one forward and one backward pass for all of them per step: ``torch.func.vmap`` over
``functional_call`` of one copy of the module, with per-model weights, batches and losses.
Gradients land in an ``(M, P)`` tensor too, and a ``StackedOptimizer`` steps every row with its
own hyperparameters and lr schedule. The models may be the seeds of one trial or the trials of
one workload: each row is its own run, and nothing in a step mixes rows, so a model whose loss
becomes NaN leaves the others untouched.

A model qualifies (``probe``) when ``vmap`` over ``functional_call`` runs its forward and
backward and gives the losses and gradients the plain module gives; it has no BatchNorm running
statistics (a buffer written in the forward pass), no frozen parameters, and all its
parameters share one floating dtype. ``choose_path`` applies that check at trial start.

On the CPU, attention runs the math kernel: the fused CPU flash-attention kernel has no vmap
batching rule, and vmap would fall back to a Python loop over models.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from api_schemas.search_space import Scalar
from api_schemas.trials import MAX_BATCH, SeedResult, TrialAssignment
from worker.runs import batch_loss, evaluate, to_device, window_diverged
from worker.stacked_optimizers import StackedOptimizer
from worker.workloads import Batch, Task

CUDA_MEMORY_FRACTION = 0.8
"""Share of the free CUDA memory a stack may fill; the rest absorbs the allocator's slack."""
PROBE_RTOL = 1e-4
"""How close the probe's stacked losses and gradients must be to the plain module's (fp32:
batched and single matrix products round differently, by ~1e-6 relative)."""


@dataclass(frozen=True)
class Stacking:
    """How a worker stacks models: on or off, how many share a stack on the CPU, and how many
    trials it leases at once to stack."""

    enabled: bool = True
    cpu_max_models: int = 64
    """Models per stack on the CPU; a larger trial runs its stacks in lockstep (on CUDA the
    size comes from the free memory)."""
    max_trials: int = MAX_BATCH
    """The most trials one batch lease asks for; the device's stack usually allows fewer."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Stacking:
        """``HPS_STACK=0`` turns stacking off; ``HPS_STACK_MAX_MODELS`` sets the CPU size;
        ``HPS_STACK_MAX_TRIALS`` caps the trials leased together (1 to 64)."""
        enabled = environ.get("HPS_STACK", "1").strip().lower() not in ("0", "false", "off")
        size = int(environ.get("HPS_STACK_MAX_MODELS", cls.cpu_max_models))
        if size < 1:
            raise ValueError(f"HPS_STACK_MAX_MODELS must be >= 1, not {size}")
        trials = int(environ.get("HPS_STACK_MAX_TRIALS", cls.max_trials))
        if not 1 <= trials <= MAX_BATCH:
            raise ValueError(f"HPS_STACK_MAX_TRIALS must be 1 to {MAX_BATCH}, not {trials}")
        return cls(enabled=enabled, cpu_max_models=size, max_trials=trials)


def _attention_kernel(device: torch.device) -> contextlib.AbstractContextManager[None]:
    if device.type == "cpu":
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class _ContiguousAttention(TorchFunctionMode):
    """Hands ``multi_head_attention_forward`` contiguous inputs.

    A batch-first ``nn.MultiheadAttention`` transposes its input to (L, B, E) before the in
    projection. Alone, that matmul folds (L, B) into one dimension; under vmap the transposed
    input cannot fold, so the per-model weight is expanded L times and multiplied as L * M
    small matrices (measured on the sort task: a quarter of the step, and L copies of every
    in-projection weight in memory). A contiguous (L, B, E) folds again.
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if func is F.multi_head_attention_forward and len(args) >= 3:
            query, key, value = args[:3]
            # Keep self-attention's identities (query is key is value): MHA packs on them.
            q = query.contiguous()
            k = q if key is query else key.contiguous()
            v = k if value is key else (q if value is query else value.contiguous())
            args = (q, k, v, *args[3:])
        return func(*args, **(kwargs or {}))


class ModelStack:
    """M models with one architecture, trained as one; row m is ``models[m]``'s run.

    ``params[m]`` are model m's trial parameters (optimizer, lr, schedule, ...), so one stack may
    hold the seeds of a trial, several trials, or both. The models are copied, not changed.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        params: Sequence[Mapping[str, Scalar]],
        total_steps: int,
        device: torch.device,
        *,
        autocast: bool = False,
    ) -> None:
        if not models or len(models) != len(params):
            raise ValueError("a stack needs one trial-parameter mapping per model, and a model")
        self.device, self.autocast = device, autocast
        self._template = copy.deepcopy(models[0]).to(device)
        named = list(self._template.named_parameters())
        self._names = [name for name, _ in named]
        self._shapes = [p.shape for _, p in named]
        ends = [0, *itertools.accumulate(p.numel() for _, p in named)]
        self._spans = list(itertools.pairwise(ends))
        with torch.no_grad():
            self._flat = torch.stack(
                [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models]
            ).to(device)
            self._buffers = {
                name: torch.stack([dict(m.named_buffers())[name] for m in models]).to(device)
                for name, _ in self._template.named_buffers()
            }
        self._grad = torch.zeros_like(self._flat)
        self._bind()
        self.optimizer = StackedOptimizer(self._flat, self._grad, params, total_steps)

    @property
    def size(self) -> int:
        return self._flat.size(0)

    def _bind(self) -> None:
        """Per-parameter leaves that are views of the rows; their gradients views of ``_grad``."""
        m = self.size
        self._params: dict[str, Tensor] = {}
        for name, (start, end), shape in zip(self._names, self._spans, self._shapes, strict=True):
            leaf = self._flat[:, start:end].view(m, *shape).detach().requires_grad_()
            # Backward adds into an existing .grad in place: the stack's gradient fills _grad.
            leaf.grad = self._grad[:, start:end].view(m, *shape)
            self._params[name] = leaf

    def _loss(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor
    ) -> Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            logits = functional_call(self._template, (params, buffers), (x,)).flatten(0, -2)
        return F.cross_entropy(logits.float(), y.flatten())

    def backward(self, batches: Sequence[Batch]) -> Tensor:
        """Every model's loss on its batch, shape (M,), with its gradient in its row of ``grad``."""
        if len(batches) != self.size:
            raise ValueError(f"{len(batches)} batches for a stack of {self.size} models")
        x = torch.stack([b[0] for b in batches]).to(self.device, non_blocking=True)
        y = torch.stack([b[1] for b in batches]).to(self.device, non_blocking=True)
        self._grad.zero_()
        with _attention_kernel(self.device), _ContiguousAttention():
            losses: Tensor = vmap(self._loss, randomness="error")(self._params, self._buffers, x, y)
        with warnings.catch_warnings():
            # The rows are strided views of (M, P): torch says so, and adds in place all the same.
            warnings.filterwarnings("ignore", message="grad and param do not obey")
            losses.sum().backward()  # type: ignore[no-untyped-call]  # (torch leaves it unannotated)
        return losses.detach()

    @property
    def grad(self) -> Tensor:
        """The last backward's gradients, (M, P)."""
        return self._grad

    def step(self, batches: Sequence[Batch]) -> Tensor:
        """One training step for every model; returns the losses (M,), still on the device."""
        losses = self.backward(batches)
        self.optimizer.step()
        return losses

    def keep(self, rows: Sequence[int]) -> None:
        """Only ``rows`` train on (increasing); the other models leave the stack."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        self._flat = self._flat.index_select(0, index)
        self._grad = torch.zeros_like(self._flat)
        self._buffers = {name: b.index_select(0, index) for name, b in self._buffers.items()}
        self._bind()
        self.optimizer.keep(rows, self._flat, self._grad)

    def export(self, row: int, model: nn.Module) -> nn.Module:
        """Copy row ``row``'s weights and buffers into ``model`` (same architecture); return it."""
        with torch.no_grad():
            for p, (start, end) in zip(model.parameters(), self._spans, strict=True):
                p.copy_(self._flat[row, start:end].view_as(p))
            for name, buffer in model.named_buffers():
                buffer.copy_(self._buffers[name][row])
        return model


@dataclass(frozen=True)
class Probe:
    """Whether a task's model can be stacked, and if so what one model of a stack costs."""

    reason: str | None
    """Why not, or None when it can."""
    bytes_per_model: int | None = None
    """CUDA memory one model of a stack took in a training step (None on the CPU)."""


def _unqualified(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            return f"{name or 'the model'} is a BatchNorm with running statistics"
    params = list(model.parameters())
    if not params:
        return "the model has no parameters"
    if any(not p.requires_grad for p in params):
        return "the model has frozen parameters"
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1 or not params[0].dtype.is_floating_point:
        return f"the parameters are not of one floating dtype ({sorted(map(str, dtypes))})"
    return None


def _close(ours: Tensor, theirs: Tensor) -> bool:
    if not bool(torch.isfinite(ours).all()):
        return False
    return float((ours - theirs).norm()) <= PROBE_RTOL * float(theirs.norm()) + 1e-6


def probe(task: Task, seeds: Sequence[int], device: torch.device, *, autocast: bool) -> Probe:
    """Train one step of two seeds' models stacked and alone, and compare (no state changes)."""
    pair = [seeds[0], seeds[-1] if len(seeds) > 1 else seeds[0]]
    models = [task.build_model(seed) for seed in pair]
    reason = _unqualified(models[0])
    if reason is not None:
        return Probe(reason)
    batches = [next(task.train_batches(seed)) for seed in pair]
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        stack = ModelStack(
            models, [{"optimizer": "sgd", "lr": 0.0}] * 2, 1, device, autocast=autocast
        )
        losses = stack.backward(batches)
        used = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else None
        for row, (model, batch) in enumerate(zip(models, batches, strict=True)):
            model = copy.deepcopy(model).to(device)
            loss, _ = batch_loss(model, to_device(batch, device), autocast=autocast)
            loss.backward()  # type: ignore[no-untyped-call]
            grad = torch.cat(
                [
                    torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten()
                    for p in model.parameters()
                ]
            )
            if not _close(losses[row : row + 1], loss.detach().reshape(1)):
                return Probe("the stacked loss differs from the model's own")
            if not _close(stack.grad[row], grad):
                return Probe("the stacked gradient differs from the model's own")
    except Exception as error:  # whatever vmap refuses: .item(), data-dependent branches, ...
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        return Probe(f"vmap over functional_call fails: {type(error).__name__}: {first_line}")
    # Optimizer state (two moments) comes on top of the step's own memory.
    param_bytes = stack._flat[0].numel() * stack._flat.element_size()
    return Probe(None, None if used is None else used // 2 + 2 * param_bytes)


@dataclass(frozen=True)
class StackPath:
    """How the models of a batch of trials train: in stacks of ``size``, or one by one."""

    size: int | None
    """Models per stack, or None for the sequential path."""
    capacity: int | None
    """Models one stack of this workload may hold on this device (None when it cannot stack):
    what the worker's next batch lease is sized from."""
    why: str


def choose_path(
    task: Task, trials: Sequence[TrialAssignment], device: torch.device, stacking: Stacking
) -> StackPath:
    """Stacked when stacking is on and the workload's model qualifies (``probe``); else not.

    ``trials`` share one workload; their seeds are the models, trial after trial.
    """
    config = trials[0].workload.config
    seeds = [seed for trial in trials for seed in trial.seeds]
    n = len(seeds)
    if not stacking.enabled:
        return StackPath(None, None, "stacking is off (HPS_STACK=0)")
    if config.compile:
        return StackPath(None, None, "compile is on: each seed's model is compiled on its own")
    # Probed in fp32: whether vmap runs the model does not depend on autocast, and bf16 would
    # round the two sides apart by more than PROBE_RTOL (its memory is below fp32's, too).
    # Probed even for one seed: the answer sizes the next batch lease.
    found = probe(task, seeds, device, autocast=False)
    if found.reason is not None:
        return StackPath(None, None, found.reason)
    if found.bytes_per_model is not None:
        free, _ = torch.cuda.mem_get_info(device)
        capacity = max(1, int(CUDA_MEMORY_FRACTION * free) // max(1, found.bytes_per_model))
    else:
        capacity = stacking.cpu_max_models
    if n < 2:
        return StackPath(None, capacity, "one seed: nothing to stack")
    size = min(capacity, n)
    stacks = math.ceil(n / size)
    what = f"{n} seeds" if len(trials) == 1 else f"{len(trials)} trials' {n} seeds"
    return StackPath(
        size, capacity, f"{what} stacked ({stacks} stack{'s' if stacks > 1 else ''} of <= {size})"
    )


class StackedSeeds:
    """The seeds of one or more trials of one workload, in stacks of at most ``size`` models,
    trained in lockstep.

    Models are laid out trial after trial, seed after seed, and a stack may span trials: each
    row trains under its own trial's parameters. The same contract as the sequential trainer's
    runs: each seed has its own model, data stream and schedule from its seed and its trial's
    parameters alone; a seed that diverges leaves its stack at the report that finds it, with
    the steps it took; a trial that ``leave``s takes its models out of their stacks, the others
    train on as they would have; results come from ``worker.runs.evaluate``.
    """

    def __init__(
        self,
        task: Task,
        trials: Sequence[TrialAssignment],
        device: torch.device,
        *,
        size: int,
        autocast: bool,
    ) -> None:
        self.task, self.device, self.autocast = task, device, autocast
        self._trial = [t for t, trial in enumerate(trials) for _ in trial.seeds]
        """The trial of each model."""
        self.seeds = [seed for trial in trials for seed in trial.seeds]
        self._models = [task.build_model(seed) for seed in self.seeds]
        self._batches: list[Iterator[Batch]] = [task.train_batches(seed) for seed in self.seeds]
        self._steps = [0] * len(self.seeds)
        self.diverged = [False] * len(self.seeds)
        self._training = set(range(len(trials)))
        self._trained: dict[int, nn.Module] = {}
        """Models whose trial left, with the weights they had then."""
        self._stacks: list[tuple[ModelStack, list[int], Tensor]] = []
        for start in range(0, len(self.seeds), size):
            members = list(range(start, min(start + size, len(self.seeds))))
            stack = ModelStack(
                [self._models[i] for i in members],
                [trials[self._trial[i]].params for i in members],
                trials[0].workload.config.steps,
                device,
                autocast=autocast,
            )
            self._stacks.append((stack, members, torch.zeros(len(members), device=device)))
        self._window = 0

    def _models_of(self, trial: int) -> list[int]:
        return [i for i, t in enumerate(self._trial) if t == trial]

    def alive(self, trial: int) -> bool:
        """Whether any seed of ``trial`` still trains."""
        return trial in self._training and not all(self.diverged[i] for i in self._models_of(trial))

    def steps(self, trial: int) -> list[int]:
        """Steps each seed of ``trial`` has taken, in its assignment's order."""
        return [self._steps[i] for i in self._models_of(trial)]

    def train_step(self) -> None:
        for stack, members, loss_sum in self._stacks:
            if members:
                loss_sum += stack.step([next(self._batches[i]) for i in members])
                for i in members:
                    self._steps[i] += 1
        self._window += 1

    def close_window(self, chance_loss: float) -> dict[int, float]:
        """As the sequential trainer's: per trial still training, the mean over its seeds, a
        diverged seed counting as chance. One host read for every stack."""
        live = [(members, s) for _, members, s in self._stacks if members]
        sums = torch.cat([s for _, s in live]).tolist() if live else []
        values = {i: chance_loss for i, gone in enumerate(self.diverged) if gone}
        position, diverging = 0, set()
        for members, loss_sum in live:
            for row, i in enumerate(members):
                mean = sums[position + row] / self._window
                if window_diverged(mean, chance_loss):
                    diverging.add(i)
                    values[i] = chance_loss
                else:
                    values[i] = mean
            position += len(members)
            loss_sum.zero_()
        for i in diverging:
            self.diverged[i] = True
        self._remove(diverging.__contains__)
        self._window = 0
        out = {}
        for trial in sorted(self._training):
            models = self._models_of(trial)
            out[trial] = sum(values[i] for i in models) / len(models)
        return out

    def leave(self, trial: int) -> None:
        """``trial``'s models stop training and leave their stacks; their weights are kept for
        ``results``. The other models' runs, window sums included, go on as they were."""
        if trial not in self._training:
            return
        self._training.discard(trial)
        self._remove(lambda i: self._trial[i] == trial, keep_weights=True)

    def _remove(self, leaving: Callable[[int], bool], *, keep_weights: bool = False) -> None:
        for k, (stack, members, loss_sum) in enumerate(self._stacks):
            keep = [row for row, i in enumerate(members) if not leaving(i)]
            if len(keep) == len(members):
                continue
            if keep_weights:
                for row, i in enumerate(members):
                    if leaving(i):
                        self._trained[i] = stack.export(row, self._models[i])
            if keep:
                stack.keep(keep)
            index = torch.tensor(keep, dtype=torch.long, device=loss_sum.device)
            self._stacks[k] = (stack, [members[r] for r in keep], loss_sum.index_select(0, index))
        # A stack whose models all left frees its memory.
        self._stacks = [entry for entry in self._stacks if entry[1]]

    def results(self, trial: int) -> list[SeedResult]:
        """Every seed of ``trial`` evaluated on its held-out batches, in its assignment's order."""
        models = dict(self._trained)
        for stack, members, _ in self._stacks:
            for row, i in enumerate(members):
                if self._trial[i] == trial:
                    models[i] = stack.export(row, self._models[i])
        return [
            evaluate(
                models.get(i, self._models[i]).to(self.device),
                self.task,
                self.device,
                seed=self.seeds[i],
                steps=self._steps[i],
                diverged=self.diverged[i],
                autocast=self.autocast,
            )
            for i in self._models_of(trial)
        ]
