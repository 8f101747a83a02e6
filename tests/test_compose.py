"""docker-compose.yml as docker compose itself reads it: ``docker compose config`` (compose 2,
which ``make system-deps`` installs) validates the file with each profile and prints the model
it would run, which these tests check. There is no Docker engine here, so nothing is started;
the Dockerfile and .env.example are read."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ("worker", "worker-cpu")
CLI_VARIABLES = {"HPS_TOKEN", "HPS_URL", "HPS_WORKER_THREADS"}
"""Variables the hps command reads (``--token``, ``--url``, ``worker --threads``)."""
PROFILES = {
    (): {"api"},
    ("gpu",): {"api", "worker"},
    ("cpu",): {"api", "worker-cpu"},
    ("postgres",): {"api", "postgres"},
    ("gpu", "postgres"): {"api", "worker", "postgres"},
}
"""Each way README.md starts compose, and the services it then runs."""

INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?+]([^}]*))?\}")


@cache
def _compose_command() -> tuple[str, ...] | None:
    """``docker compose`` (the CLI plugin) or ``docker-compose``, whichever is compose 2."""
    for command in (("docker", "compose"), ("docker-compose",)):
        if shutil.which(command[0]) is None:
            continue
        done = subprocess.run([*command, "version"], capture_output=True, text=True)
        if done.returncode == 0 and re.search(r"version v?2\.", done.stdout):
            return command
    return None


needs_compose = pytest.mark.skipif(
    _compose_command() is None,
    reason="docker compose 2 missing: `make system-deps` installs it (as root with apt-get)",
)


def compose_config(
    *profiles: str, file: Path = ROOT / "docker-compose.yml", env_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``docker compose config`` with ``profiles``, reading ``env_file`` (default .env.example)
    and nothing from this process's environment."""
    command = _compose_command()
    assert command is not None
    args = [*command, "--project-directory", str(file.parent), "-f", str(file)]
    args += ["--env-file", str(env_file or ROOT / ".env.example")]
    for profile in profiles:
        args += ["--profile", profile]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(file.parent)}
    return subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60
    )


@cache
def _model(*profiles: str) -> dict[str, Any]:
    done = compose_config(*profiles)
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = json.loads(done.stdout)
    return model


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _model("gpu", "cpu", "postgres")["services"]
    return services


def _env_example() -> dict[str, str]:
    """Every variable .env.example names, set or commented out, with its example value."""
    found: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


@needs_compose
@pytest.mark.parametrize("profiles", list(PROFILES), ids=lambda p: "+".join(p) or "default")
def test_compose_validates_each_profile_and_runs_its_services(profiles: tuple[str, ...]) -> None:
    assert set(_model(*profiles)["services"]) == PROFILES[profiles]


@needs_compose
def test_a_typo_in_the_compose_file_fails_validation(tmp_path: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("    healthcheck:", "    healthchek:", 1))
    done = compose_config(file=broken)
    assert done.returncode != 0
    assert "healthchek" in done.stderr


@needs_compose
def test_the_services_share_one_image_built_from_the_dockerfile() -> None:
    services = _services()
    assert services["api"]["build"]["context"] == str(ROOT)
    assert services["api"]["build"]["dockerfile"] == "Dockerfile"
    for name in WORKERS:
        worker = services[name]
        assert worker["image"] == services["api"]["image"]
        assert "replicas" not in worker.get("deploy", {}), "keep --scale worker=N working"
        assert "container_name" not in worker, "a fixed name breaks --scale"
    assert services["postgres"]["image"].startswith("postgres:16")


@needs_compose
def test_the_gpu_worker_reserves_nvidia_gpus_and_the_cpu_one_none() -> None:
    services = _services()
    gpu, cpu = services["worker"], services["worker-cpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["count"] == -1  # compose's "all"
    assert gpu["command"][gpu["command"].index("--gpus") + 1] == "all"  # a process per GPU
    assert "deploy" not in cpu
    assert cpu["command"][cpu["command"].index("--device") + 1] == "cpu"
    # Neither starts on a plain `docker compose up`: a GPU worker fails on a host without one.
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert "profiles" not in services["api"]


@needs_compose
def test_sqlite_lives_on_a_named_volume_the_api_alone_mounts() -> None:
    model = _model("gpu", "cpu")
    api = model["services"]["api"]
    (volume,) = api["volumes"]
    assert volume["type"] == "volume" and volume["source"] in model["volumes"]
    assert api["environment"]["HPS_DATABASE_URL"] == f"sqlite:///{volume['target']}/hps.db"
    assert api["environment"]["HPS_TOKEN_FILE"] == f"{volume['target']}/hps.token"
    for name in WORKERS:
        worker = model["services"][name]
        assert "volumes" not in worker and "env_file" not in worker
        assert set(worker["environment"]) <= CLI_VARIABLES, "workers hold no database secrets"
        assert worker["stop_grace_period"] == "1m0s"  # time to hand the trial back


@needs_compose
def test_postgres_is_opt_in_healthy_persistent_and_reachable_with_the_image_s_driver(
    tmp_path: Path,
) -> None:
    services = _services()
    postgres = services["postgres"]
    assert postgres["profiles"] == ["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    (volume,) = postgres["volumes"]
    assert volume["source"] == "hps-postgres" and volume["target"] == "/var/lib/postgresql/data"
    assert "ports" not in postgres, "only the api talks to it"
    depends = services["api"]["depends_on"]["postgres"]
    assert depends == {"condition": "service_healthy", "required": False}

    # .env.example with its PostgreSQL lines uncommented, as it says: the api's URL names the
    # compose service, its user and database, and a driver the image installs.
    example = (ROOT / ".env.example").read_text()
    env_file = tmp_path / ".env"
    env_file.write_text(
        re.sub(r"^# (HPS_DATABASE_URL|POSTGRES_PASSWORD)=", r"\1=", example, flags=re.M)
    )
    done = compose_config("postgres", env_file=env_file)
    assert done.returncode == 0, done.stderr
    configured = json.loads(done.stdout)["services"]
    url = configured["api"]["environment"]["HPS_DATABASE_URL"]
    env = configured["postgres"]["environment"]
    assert url == (
        f"postgresql+psycopg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{env['POSTGRES_DB']}"
    )
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("psycopg") for d in extras["optional-dependencies"]["postgres"])
    assert 'ARG EXTRAS="worker,postgres"' in (ROOT / "Dockerfile").read_text()


@needs_compose
def test_environment_names_real_settings() -> None:
    fields = {f"HPS_{name.upper()}" for name in Settings.model_fields}
    services = _services()
    assert set(services["api"]["environment"]) <= fields
    for name in WORKERS:
        assert set(services[name]["environment"]) <= CLI_VARIABLES


def test_every_variable_compose_reads_is_documented_in_env_example() -> None:
    used = {m.group(1) for m in INTERPOLATION.finditer((ROOT / "docker-compose.yml").read_text())}
    documented = set(_env_example())
    assert used == documented, f"undocumented: {used - documented}; unused: {documented - used}"
    assert _env_example()["HPS_TOKEN"] == "", "no token in an example file"


@needs_compose
def test_the_api_serves_the_dashboard_and_workers_wait_for_its_health() -> None:
    services = _services()
    api = services["api"]
    assert "/v1/health" in " ".join(api["healthcheck"]["test"])
    api_command = api["command"]
    assert api_command[:2] == ["hps", "serve"]
    assert api_command[api_command.index("--host") + 1] == "0.0.0.0"
    (port,) = api["ports"]
    assert (port["target"], port["published"]) == (8000, "8000")
    for name in WORKERS:
        worker = services[name]
        assert worker["depends_on"]["api"]["condition"] == "service_healthy"
        command = worker["command"]
        assert command[:2] == ["hps", "worker"]
        assert command[command.index("--url") + 1] == "http://api:8000"


@needs_compose
def test_dockerfile_installs_the_package_with_its_extras_and_a_chosen_torch() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("api_schemas", "service", "worker", "hps"):
        assert f"COPY {package} {package}" in dockerfile
    assert 'pip install --no-cache-dir ".[${EXTRAS}]"' in dockerfile
    assert "ARG TORCH_INDEX_URL" in dockerfile
    assert _services()["api"]["build"]["args"] == {"TORCH_INDEX_URL": ""}
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "hps.token", "*.db"} <= set(ignored), "secrets stay out of the build context"
