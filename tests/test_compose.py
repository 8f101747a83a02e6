"""docker-compose.yml is read, not run (no Docker engine here): check what it promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_api_and_worker_services_share_one_image() -> None:
    services = _compose()["services"]
    assert set(services) == {"api", "worker"}
    assert services["api"]["build"] == "."
    assert services["worker"]["image"] == services["api"]["image"]
    assert "replicas" not in services["worker"].get("deploy", {}), "keep --scale worker=N working"
    assert "container_name" not in services["worker"], "a fixed name breaks --scale"


def test_sqlite_lives_on_a_named_volume_the_api_alone_mounts() -> None:
    compose = _compose()
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    volume, mount = api["volumes"][0].split(":")
    assert volume in compose["volumes"]
    assert api["environment"]["HPS_DATABASE_URL"] == f"sqlite:///{mount}/hps.db"
    assert "volumes" not in worker and "HPS_DATABASE_URL" not in worker.get("environment", {})


def test_environment_names_real_settings() -> None:
    fields = {f"HPS_{name.upper()}" for name in Settings.model_fields}
    for service in _compose()["services"].values():
        unknown = set(service.get("environment", {})) - fields
        assert not unknown, f"not a setting: {unknown}"


def test_workers_wait_for_a_healthy_api_and_reach_it_by_name() -> None:
    services = _compose()["services"]
    assert "/v1/health" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"
    command = services["worker"]["command"]
    assert command[:2] == ["hps", "worker"]
    assert command[command.index("--url") + 1] == "http://api:8000"
    api_command = services["api"]["command"]
    assert api_command[api_command.index("--host") + 1] == "0.0.0.0"
    assert services["api"]["ports"] == ["8000:8000"]


def test_dockerfile_installs_the_package_with_the_worker_extra() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("api_schemas", "service", "worker", "hps"):
        assert f"COPY {package} {package}" in dockerfile
    assert '".[worker]"' in dockerfile
