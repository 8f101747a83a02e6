"""Worker overhead: training steps/s of trials run through hps vs a bare torch loop.

Through hps: the real ``hps serve`` on a temporary SQLite file and one real ``hps worker``
process (one thread), leasing, reporting every ``report_every`` steps and completing each trial.
The baseline: the same model, batches and optimizer in a plain ``for`` loop (one thread), timed
in this process. Both sides run in the same invocation, alternating, so the ratio compares like
with like on whatever machine runs it. Two ratios are printed:

- *in-loop*: the worker's own steps/s over its training loop (lr schedule, divergence checks,
  reports over HTTP) vs the bare loop; the target is >= 0.97;
- *end to end*: steps / (trial finished - trial started) as the service records it, so model
  build, evaluation and the lease/complete round trips are charged to hps too.

    python bench/worker_overhead.py [--trials 3] [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from api_schemas import PostLNTransformer, SortTaskConfig
from hps.client import Client
from hps.local import free_port
from worker.workloads import build_task

ROOT = Path(__file__).resolve().parents[1]


def bare_loop(config: SortTaskConfig, seed: int = 0) -> float:
    """Steps/s of the plainest loop that trains the same model on the same batches."""
    task = build_task(PostLNTransformer(config=config))
    model = task.build_model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = task.train_batches(seed)
    start = time.perf_counter()
    for _ in range(config.steps):
        x, y = next(batches)
        loss = F.cross_entropy(model(x).flatten(0, -2), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # (torch leaves it unannotated)
        optimizer.step()
    loss.item()
    return config.steps / (time.perf_counter() - start)


def through_hps(config: SortTaskConfig, trials: int) -> tuple[list[float], list[float]]:
    """(in-loop steps/s, end-to-end steps/s) of each trial trained by a real worker."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "HPS_DATABASE_URL": f"sqlite:///{tmp}/hps.db",
            "HPS_TOKEN_FILE": f"{tmp}/hps.token",
            "PYTHONPATH": str(ROOT),
        }
        hps = [sys.executable, "-m", "hps"]
        serve = [*hps, "serve", "--port", str(port), "--log-level", "warning"]
        server = subprocess.Popen(serve, env=env, cwd=tmp)
        try:
            token_file = Path(tmp, "hps.token")
            deadline = time.monotonic() + 60
            while not token_file.exists():
                assert server.poll() is None and time.monotonic() < deadline, "service down"
                time.sleep(0.1)
            with Client(url, token=token_file.read_text().strip()) as client:
                while not client.health():
                    time.sleep(0.1)
                study = client.submit(
                    {
                        "name": "worker-overhead",
                        "workload": {"name": "postln_transformer", "config": config.model_dump()},
                        "n_trials": trials,
                        "seeds_per_trial": 1,
                        "sampler": {"type": "random", "seed": 0},
                        "search_space": {
                            "optimizer": {"type": "fixed", "value": "adam"},
                            "lr": {"type": "fixed", "value": 1e-3},
                        },
                    }
                )
                worker = [*hps, "worker", "--url", url, "--threads", "1", "--burst"]
                subprocess.run(worker, env=env, check=True, capture_output=True)
                done = client.trials(study.id)
        finally:
            server.terminate()
            server.wait()
    in_loop = [t.steps_per_second or 0.0 for t in done]
    end_to_end = [
        config.steps / (t.finished_at - t.started_at).total_seconds()
        for t in done
        if t.finished_at and t.started_at
    ]
    return in_loop, end_to_end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials through hps")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per trial")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = SortTaskConfig(steps=args.steps)

    # The baseline runs as often as hps does, half before and half after, so a machine that
    # speeds up or slows down during the run moves both sides alike.
    before = [bare_loop(config) for _ in range((args.trials + 1) // 2)]
    in_loop, end_to_end = through_hps(config, args.trials)
    bare = before + [bare_loop(config) for _ in range(args.trials // 2 + 1)]
    baseline = statistics.median(bare)
    runs = ", ".join(f"{r:.1f}" for r in bare)
    print(f"model: postln_transformer defaults, {args.steps} steps of batch {config.batch_size}")
    print(f"bare torch loop        {baseline:8.1f} steps/s  (runs: {runs})")
    loop, whole = statistics.median(in_loop), statistics.median(end_to_end)
    print(f"hps worker, in-loop    {loop:8.1f} steps/s  ({len(in_loop)} trials)")
    print(f"hps worker, end to end {whole:8.1f} steps/s")
    print(f"ratio in-loop    {loop / baseline:.3f}  (target >= 0.97)")
    print(f"ratio end to end {whole / baseline:.3f}")


if __name__ == "__main__":
    main()
