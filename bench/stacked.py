"""Stacked against sequential training: steps/s of a trial's seeds trained both ways.

Both sides are the worker's own trainers (``worker.sequential.SequentialSeeds`` and
``worker.stacked.StackedSeeds``) on the same assignment: the default Post-LN sort task (6
layers, d=64, batch 32) under Adam, M seeds. They run in the same process, alternating round by
round, so the ratio compares like with like even on a machine other processes load; the
figure is model-steps/s (one optimizer step of one model), the median over rounds, and the
ratio is the median of the per-round ratios. A case is ``THREADS:MODELS``; on CUDA the thread
count is torch's CPU threads and the memory is the peak CUDA memory of each side.

    python bench/stacked.py                                # CPU: 1:6 and 2:24, the targets
    python bench/stacked.py --device cuda --cases 1:1 1:8 1:64 1:256 --precision fp32 bf16
    python bench/stacked.py --size small --cases 1:1 1:4 --seconds 0.2 --rounds 1  # smoke
    python bench/stacked.py --cases 1:6 --profile 3        # where each side's time goes
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

import torch

from api_schemas import PostLNTransformer, SortTaskConfig, TrialAssignment
from worker.sequential import SequentialSeeds
from worker.stacked import StackedSeeds
from worker.workloads import build_task

SIZES = {
    "default": SortTaskConfig(steps=100_000),
    "small": SortTaskConfig(
        n_layers=1, d_model=16, n_heads=2, dim_feedforward=32, seq_len=8, vocab=8,
        batch_size=8, steps=100_000,
    ),
}  # fmt: skip
"""The workload's sizes: the study default, or a tiny one for the smoke test."""


def _assignment(config: SortTaskConfig, models: int) -> TrialAssignment:
    return TrialAssignment(
        trial_id=1,
        study_id=1,
        trial_number=0,
        lease_token="bench",
        lease_expires_at=datetime(2100, 1, 1, tzinfo=UTC),
        attempt=1,
        params={"optimizer": "adam", "lr": 1e-3, "warmup_steps": 100, "lr_decay": "cosine"},
        workload=PostLNTransformer(config=config),
        seeds=list(range(models)),
        metric="loss",
        time_limit_s=1e9,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(seeds: SequentialSeeds | StackedSeeds, device: torch.device, seconds: float) -> float:
    """Model-steps/s over at least two steps and ``seconds``, after one warm-up step."""
    seeds.train_step()
    _sync(device)
    start, steps = time.perf_counter(), 0
    while steps < 2 or time.perf_counter() - start < seconds:
        seeds.train_step()
        steps += 1
    _sync(device)
    return steps * len(seeds.steps(0)) / (time.perf_counter() - start)


def _build(
    kind: str, assignment: TrialAssignment, device: torch.device, autocast: bool
) -> SequentialSeeds | StackedSeeds:
    task = build_task(assignment.workload)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    seeds: SequentialSeeds | StackedSeeds
    if kind == "stacked":
        seeds = StackedSeeds(
            task, [assignment], device, size=len(assignment.seeds), autocast=autocast
        )
    else:
        seeds = SequentialSeeds(task, [assignment], device)
    return seeds


def profile_case(threads: int, models: int, *, device: torch.device, size: str, steps: int) -> None:
    """Print each side's CPU time over ``steps`` steps and the operators that take most of it."""
    from torch.profiler import profile

    torch.set_num_threads(threads)
    assignment = _assignment(SIZES[size], models)
    for kind in ("sequential", "stacked"):
        seeds = _build(kind, assignment, device, autocast=False)
        seeds.train_step()
        with profile() as prof:
            for _ in range(steps):
                seeds.train_step()
            _sync(device)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events) / 1e3
        print(f"{kind}: {total / (steps * models):.1f} ms of CPU per model-step; top operators:")
        for event in events[:8]:
            share = event.self_cpu_time_total / 1e3 / total
            print(f"  {event.key:<48} {share:6.1%}  {event.count // steps:5d} calls/step")


def run_case(
    threads: int,
    models: int,
    *,
    device: torch.device,
    size: str,
    precision: str,
    rounds: int,
    seconds: float,
) -> dict[str, float]:
    torch.set_num_threads(threads)
    config = SIZES[size].model_copy(update={"precision": precision})
    assignment = _assignment(config, models)
    autocast = precision == "bf16" and device.type == "cuda"
    rates: dict[str, list[float]] = {"sequential": [], "stacked": []}
    memory: dict[str, int] = {}
    for _ in range(rounds):
        for kind in rates:
            seeds = _build(kind, assignment, device, autocast)
            rates[kind].append(_rate(seeds, device, seconds))
            if device.type == "cuda":
                memory[kind] = max(memory.get(kind, 0), torch.cuda.max_memory_allocated(device))
            del seeds
    ratios = [b / a for a, b in zip(rates["sequential"], rates["stacked"], strict=True)]
    out = {
        "sequential": statistics.median(rates["sequential"]),
        "stacked": statistics.median(rates["stacked"]),
        "ratio": statistics.median(ratios),
    }
    for kind, peak in memory.items():
        out[f"{kind}_mib"] = peak / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cases", nargs="+", default=["1:6", "2:24"], help="THREADS:MODELS")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--size", default="default", choices=sorted(SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per side and round")
    parser.add_argument("--profile", type=int, metavar="STEPS", help="profile the first case")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    if args.profile:
        threads, models = (int(part) for part in args.cases[0].split(":"))
        profile_case(threads, models, device=device, size=args.size, steps=args.profile)
        return
    print(f"torch {torch.__version__}, {device}, {args.size} sort task, Adam; model-steps/s")
    print("precision threads models  sequential    stacked   ratio   seq MiB  stack MiB")
    for precision in args.precision:
        for case in args.cases:
            threads, models = (int(part) for part in case.split(":"))
            result = run_case(
                threads,
                models,
                device=device,
                size=args.size,
                precision=precision,
                rounds=args.rounds,
                seconds=args.seconds,
            )
            mib = (
                f"{result['sequential_mib']:9.0f}  {result['stacked_mib']:9.0f}"
                if "stacked_mib" in result
                else f"{'-':>9}  {'-':>9}"
            )
            print(
                f"{precision:>9} {threads:7d} {models:6d} {result['sequential']:11.1f} "
                f"{result['stacked']:10.1f} {result['ratio']:6.2f}x {mib}",
                flush=True,
            )


if __name__ == "__main__":
    main()
