"""Tokens through the real processes: the CLI's token commands, `hps up` with auth on, and logs
that never hold a secret."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from api_schemas.tokens import Scope
from hps.client import ApiError
from tests.e2e.conftest import TINY_WORKLOAD, Service, environment, free_port

pytestmark = pytest.mark.e2e

HPS = [sys.executable, "-m", "hps"]

TINY_STUDY: dict[str, Any] = {
    "name": "auth",
    "workload": TINY_WORKLOAD,
    "n_trials": 2,
    "seeds_per_trial": 1,
    "sampler": {"type": "random", "seed": 1},
    "search_space": {
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
}


def hps(service: Service, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HPS, *args, "--url", service.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**service.cli_env, **env},
    )


def test_tokens_are_created_listed_and_revoked_with_the_cli(service: Service) -> None:
    created = hps(service, "token", "create", "--scope", "read", "--name", "ci-reader")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert created.stdout == secret + "\n" and secret.startswith("hps_")  # stdout: the secret only
    assert "created token" in created.stderr and "read" in created.stderr

    listed = hps(service, "token", "list")
    assert listed.returncode == 0, listed.stderr
    assert "ci-reader" in listed.stdout and "local-admin" in listed.stdout
    for token in (secret, service.admin_token, service.worker_token):
        assert token not in listed.stdout + listed.stderr

    with service.client(secret) as reader:
        assert reader.studies() == []
        with pytest.raises(ApiError) as refused:
            reader.submit(TINY_STUDY)
        assert refused.value.status == 403

    with service.client() as admin:
        (record,) = [t for t in admin.tokens() if t.name == "ci-reader"]
    revoked = hps(service, "token", "revoke", str(record.id))
    assert revoked.returncode == 0, revoked.stderr

    # The CLI with the revoked token (HPS_TOKEN wins over the file): a clear error, exit 2.
    listing = hps(service, "token", "list", HPS_TOKEN=secret)
    assert listing.returncode == 2
    assert "not valid" in listing.stderr and "hps token create" in listing.stderr


def test_no_token_reaches_a_log(service: Service) -> None:
    with service.client() as admin:
        study = admin.submit(TINY_STUDY)
        assert service.start_worker("--burst").wait(timeout=120) == 0
        assert admin.study(study.id).state == "finished"
        reader = admin.create_token("reader", [Scope.READ]).token
    with service.client(reader) as client:
        client.studies()
    with service.client("hps_a-bogus-token") as client, pytest.raises(ApiError):
        client.studies()

    logs = {path.name: path.read_text() for path in service.log.parent.glob("*.log")}
    assert set(logs) == {"service.log", "worker0.log"}
    assert "POST /v1/leases" in logs["service.log"], "no access log: this test would prove nothing"
    assert str(service.token_file) in logs["service.log"]
    for name, text in logs.items():
        for token in (service.admin_token, service.worker_token, reader, "hps_a-bogus-token"):
            assert token not in text, f"a token in {name}"


def test_hps_up_works_with_auth_on(tmp_path: Path) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(TINY_STUDY))
    port = str(free_port())
    cmd = [*HPS, "up", "--port", port, "--workers", "1", "--submit", str(spec), "--exit-when-done"]
    env = environment(HPS_DATABASE_URL="sqlite:///./hps.db")
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "best trial" in done.stdout
    token_file = tmp_path / "hps.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() not in done.stdout + done.stderr
    assert os.stat(tmp_path / "hps.db").st_size > 0
