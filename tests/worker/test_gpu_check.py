"""``bench/gpu_check.sh --device cpu``: the GPU check at tiny sizes, so that it does not rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_the_cpu_at_small_sizes() -> None:
    found = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu"],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    rows = [
        line.split()
        for line in found.stdout.splitlines()
        if line.split()[:1] in (["fp32"], ["bf16"])
    ]
    assert [(row[0], row[2]) for row in rows] == [
        ("fp32", "1"),
        ("fp32", "8"),
        ("bf16", "1"),
        ("bf16", "8"),
    ]
    for row in rows:
        sequential, stacked = float(row[3]), float(row[4])
        assert sequential > 0 and stacked > 0
