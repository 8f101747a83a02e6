"""README.md's "Running on a cluster" runs the commands tests/deploy runs, and the Secrets it
creates are the ones the manifests read."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.test_kubernetes import KUBERNETES, KUSTOMIZATIONS

ROOT = Path(__file__).resolve().parents[2]


def section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Running on a cluster")
    return readme[start : readme.index("\n## ", start + 1)]


def test_the_section_runs_what_the_tests_run() -> None:
    text = section()
    # tests/deploy/test_kubernetes.py: `kubectl kustomize DIR`, then `kubernetes-validate --strict`.
    assert "kubectl kustomize deploy/kubernetes/overlays/postgres > hps.yaml" in text
    assert "kubernetes-validate --strict hps.yaml" in text
    for name in KUSTOMIZATIONS:
        if name != "base":
            assert f"kubectl apply -k deploy/kubernetes/{name}" in text, name
    # tests/deploy/test_slurm.py runs this script; test_workers_per_host.py this option.
    assert "sbatch deploy/slurm/hps-worker.sbatch" in text
    assert "hps worker --processes" in text


def test_the_secrets_it_creates_are_the_ones_the_manifests_read() -> None:
    created = set(
        re.findall(r"create secret generic ([\w-]+)[\s\\]+--from-literal=(\w+)=", section())
    )
    read: set[tuple[str, str]] = set()
    for path in KUBERNETES.rglob("*.yaml"):
        text = path.read_text()
        read |= set(re.findall(r"secretKeyRef:\s+name: ([\w-]+)\s+key: (\w+)", text))
    assert (
        read
        == created
        == {
            ("hps-postgres", "password"),
            ("hps-database", "url"),
            ("hps-worker-token", "token"),
        }
    )
