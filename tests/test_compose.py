"""docker-compose.yml, the Dockerfile and .env.example are read, not run (no Docker engine here):
check what they promise."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ("worker", "worker-cpu")
CLI_VARIABLES = {"HPS_TOKEN", "HPS_URL", "HPS_WORKER_THREADS"}
"""Variables the hps command reads (``--token``, ``--url``, ``worker --threads``)."""

INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?+]([^}]*))?\}")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _default(value: str) -> str:
    """``${NAME:-default}`` -> ``default``; a plain value stays as it is."""
    match = INTERPOLATION.fullmatch(value)
    return value if match is None else match.group(2) or ""


def _env_example() -> dict[str, str]:
    """Every variable .env.example names, set or commented out, with its example value."""
    found: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_the_services_share_one_image_built_from_the_dockerfile() -> None:
    services = _compose()["services"]
    assert set(services) == {"api", *WORKERS, "postgres"}
    assert services["api"]["build"]["context"] == "."
    for name in WORKERS:
        worker = services[name]
        assert worker["image"] == services["api"]["image"]
        assert "replicas" not in worker.get("deploy", {}), "keep --scale worker=N working"
        assert "container_name" not in worker, "a fixed name breaks --scale"
    assert services["postgres"]["image"].startswith("postgres:16")


def test_the_gpu_worker_reserves_nvidia_gpus_and_the_cpu_one_none() -> None:
    services = _compose()["services"]
    gpu, cpu = services["worker"], services["worker-cpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["count"] == "all" or device.get("device_ids")
    assert gpu["command"][gpu["command"].index("--gpus") + 1] == "all"  # a process per GPU
    assert "deploy" not in cpu
    assert cpu["command"][cpu["command"].index("--device") + 1] == "cpu"
    # Neither starts on a plain `docker compose up`: a GPU worker fails on a host without one.
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert "profiles" not in services["api"]


def test_sqlite_lives_on_a_named_volume_the_api_alone_mounts() -> None:
    compose = _compose()
    api = compose["services"]["api"]
    volume, mount = api["volumes"][0].split(":")
    assert volume in compose["volumes"]
    assert _default(api["environment"]["HPS_DATABASE_URL"]) == f"sqlite:///{mount}/hps.db"
    for name in WORKERS:
        worker = compose["services"][name]
        assert "volumes" not in worker and "env_file" not in worker
        assert set(worker["environment"]) <= CLI_VARIABLES, "workers hold no database secrets"


def test_postgres_is_opt_in_healthy_persistent_and_reachable_with_the_image_s_driver() -> None:
    compose = _compose()
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["profiles"] == ["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume, mount = postgres["volumes"][0].split(":")
    assert volume in compose["volumes"] and mount == "/var/lib/postgresql/data"
    assert "ports" not in postgres, "only the api talks to it"
    depends = services["api"]["depends_on"]["postgres"]
    assert depends == {"condition": "service_healthy", "required": False}

    # The URL .env.example suggests names the compose service, its user and database, and a
    # driver the image installs (the `postgres` extra).
    url = _env_example()["HPS_DATABASE_URL"]
    env = postgres["environment"]
    assert url.startswith(f"postgresql+psycopg://{env['POSTGRES_USER']}:")
    assert url.endswith(f"@postgres:5432/{env['POSTGRES_DB']}")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("psycopg") for d in extras["optional-dependencies"]["postgres"])
    assert 'ARG EXTRAS="worker,postgres"' in (ROOT / "Dockerfile").read_text()


def test_environment_names_real_settings() -> None:
    fields = {f"HPS_{name.upper()}" for name in Settings.model_fields}
    services = _compose()["services"]
    assert set(services["api"]["environment"]) <= fields
    for name in WORKERS:
        assert set(services[name]["environment"]) <= CLI_VARIABLES


def test_every_variable_compose_reads_is_documented_in_env_example() -> None:
    used = {m.group(1) for m in INTERPOLATION.finditer((ROOT / "docker-compose.yml").read_text())}
    documented = set(_env_example())
    assert used == documented, f"undocumented: {used - documented}; unused: {documented - used}"
    assert _env_example()["HPS_TOKEN"] == "", "no token in an example file"


def test_the_api_serves_the_dashboard_and_workers_wait_for_its_health() -> None:
    services = _compose()["services"]
    api = services["api"]
    assert "/v1/health" in " ".join(api["healthcheck"]["test"])
    api_command = api["command"]
    assert api_command[:2] == ["hps", "serve"]
    assert api_command[api_command.index("--host") + 1] == "0.0.0.0"
    assert api["ports"] == ["8000:8000"]
    for name in WORKERS:
        worker = services[name]
        assert worker["depends_on"]["api"]["condition"] == "service_healthy"
        command = worker["command"]
        assert command[:2] == ["hps", "worker"]
        assert command[command.index("--url") + 1] == "http://api:8000"


def test_dockerfile_installs_the_package_with_its_extras_and_a_chosen_torch() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("api_schemas", "service", "worker", "hps"):
        assert f"COPY {package} {package}" in dockerfile
    assert 'pip install --no-cache-dir ".[${EXTRAS}]"' in dockerfile
    assert "ARG TORCH_INDEX_URL" in dockerfile
    assert _compose()["services"]["api"]["build"]["args"]["TORCH_INDEX_URL"].startswith("${")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "hps.token", "*.db"} <= set(ignored), "secrets stay out of the build context"
