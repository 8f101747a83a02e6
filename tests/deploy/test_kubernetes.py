"""deploy/kubernetes, checked offline: every kustomization builds with ``kubectl kustomize`` and
passes ``kubernetes-validate --strict`` (bundled schemas, no cluster), a typo fails, and the
built manifests keep what README.md's "Running on a cluster" promises."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tests.postgres import query

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = sorted(
    str(path.parent.relative_to(KUBERNETES)) for path in KUBERNETES.rglob("kustomization.yaml")
)
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
OLDEST_KUBERNETES = "1.29.0"
"""Validated against this and the newest schemas kubernetes-validate bundles."""

pytestmark = [
    pytest.mark.skipif(
        shutil.which("kubectl") is None,
        reason="kubectl missing: `make system-deps` installs it (as root with apt-get)",
    ),
    pytest.mark.skipif(
        not VALIDATE.exists(), reason="kubernetes-validate missing: pip install -e '.[dev]'"
    ),
]


def build(directory: Path) -> str:
    done = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def validate(manifests: str, tmp_path: Path, version: str | None = None) -> tuple[int, str]:
    path = tmp_path / "manifests.yaml"
    path.write_text(manifests)
    version_args = ["--kubernetes-version", version] if version else []
    done = subprocess.run(
        [str(VALIDATE), "--strict", "--quiet", *version_args, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def resources(name: str) -> dict[str, dict[str, Any]]:
    """The built manifests of ``name``, by ``Kind/name``."""
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc
        for doc in yaml.safe_load_all(build(KUBERNETES / name))
    }


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def env(workload: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload)["env"]}


def test_there_are_the_overlays_the_readme_names() -> None:
    expected = {"base", "burst", "overlays/postgres", "overlays/postgres-external"}
    assert set(KUSTOMIZATIONS) == {*expected, "overlays/sqlite"}
    readme = (ROOT / "README.md").read_text()
    for name in KUSTOMIZATIONS:
        if name != "base":
            assert f"kubectl apply -k deploy/kubernetes/{name}" in readme, name


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_kustomization_builds_and_passes_strict_validation(name: str, tmp_path: Path) -> None:
    manifests = build(KUBERNETES / name)
    for version in (OLDEST_KUBERNETES, None):
        code, output = validate(manifests, tmp_path, version)
        assert code == 0, output


def test_a_typo_in_a_manifest_fails_validation(tmp_path: Path) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copy)
    api = copy / "base" / "api.yaml"
    api.write_text(api.read_text().replace("readinessProbe:", "readinesProbe:"))
    code, output = validate(build(copy / "overlays" / "postgres"), tmp_path)
    assert code != 0
    assert "'readinesProbe' was unexpected" in output


def test_a_typo_in_an_overlay_patch_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copy)
    overlay = copy / "overlays" / "sqlite" / "kustomization.yaml"
    overlay.write_text(overlay.read_text().replace("/volumeMounts/-", "/volumeMount/-"))
    done = subprocess.run(["kubectl", "kustomize", str(overlay.parent)], capture_output=True)
    assert done.returncode != 0


def _service_is_hardened(api: dict[str, Any]) -> None:
    pod = api["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    main = container(api)
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["resources"]["requests"] and main["resources"]["limits"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert main[probe]["httpGet"]["path"] == "/v1/health"
    # Everything the service writes is on a volume: the token file and /tmp.
    mounts = {m["mountPath"] for m in main["volumeMounts"]}
    token_file = Path(env(api)["HPS_TOKEN_FILE"])
    assert str(token_file.parent) in mounts and "/tmp" in mounts
    assert set(env(api)) <= {f"HPS_{f.upper()}" for f in Settings.model_fields} | {
        "HOME",
        "MPLCONFIGDIR",
    }


def test_postgres_runs_two_hardened_replicas_on_a_url_from_a_secret() -> None:
    built = resources("overlays/postgres")
    api = built["Deployment/hps-api"]
    assert api["spec"]["replicas"] >= 2
    _service_is_hardened(api)
    assert env(api)["HPS_DATABASE_URL"] == {"secretKeyRef": {"name": "hps-database", "key": "url"}}
    service = built["Service/hps"]
    assert service["spec"]["selector"] == api["spec"]["template"]["metadata"]["labels"] | {}
    assert service["spec"]["ports"][0]["port"] == 8000
    postgres = built["StatefulSet/hps-postgres"]
    assert container(postgres)["image"].startswith("postgres:16")
    assert postgres["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert built["Service/hps-postgres"]["spec"]["ports"][0]["port"] == 5432
    external = resources("overlays/postgres-external")
    assert "StatefulSet/hps-postgres" not in external
    assert external["Deployment/hps-api"] == api


def test_sqlite_runs_one_replica_on_a_volume_and_never_two_at_once() -> None:
    built = resources("overlays/sqlite")
    api = built["Deployment/hps-api"]
    assert api["spec"]["replicas"] == 1
    assert api["spec"]["strategy"] == {"type": "Recreate"}
    _service_is_hardened(api)
    assert env(api)["HPS_DATABASE_URL"] == "sqlite:////data/hps.db"
    assert env(api)["HPS_TOKEN_FILE"] == "/data/hps.token"
    (claim,) = [v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert f"PersistentVolumeClaim/{claim['persistentVolumeClaim']['claimName']}" in built


@pytest.mark.parametrize(("name", "workload"), [("base", "Deployment"), ("burst", "Job")])
def test_gpu_workers_take_one_gpu_a_token_from_a_secret_and_time_to_hand_back(
    name: str, workload: str
) -> None:
    (worker,) = [
        doc
        for key, doc in resources(name).items()
        if key.startswith(f"{workload}/") and "worker" in key
    ]
    pod = worker["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    assert pod["securityContext"]["runAsNonRoot"] is True
    main = container(worker)
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env(worker)["HPS_TOKEN"] == {
        "secretKeyRef": {"name": "hps-worker-token", "key": "token"}
    }
    # One thread per requested core, not one per core of the node (oversubscription).
    assert env(worker)["HPS_WORKER_THREADS"]["resourceFieldRef"]["resource"] == "requests.cpu"
    command = main["command"]
    assert command[:2] == ["hps", "worker"]
    assert command[command.index("--url") + 1] == "http://hps:8000"
    assert command[command.index("--device") + 1] == "cuda"
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    if workload == "Job":
        assert worker["spec"]["completionMode"] == "Indexed"
        assert "--burst" in command


def test_the_pods_user_is_the_image_s() -> None:
    assert "useradd --create-home --uid 1000 hps" in (ROOT / "Dockerfile").read_text()


@pytest.mark.postgresql
def test_the_init_container_creates_the_tables_once_for_replicas_starting_together(
    postgres_url: str,
) -> None:
    api = resources("overlays/postgres")["Deployment/hps-api"]
    (init,) = api["spec"]["template"]["spec"]["initContainers"]
    assert env(api)["HPS_DATABASE_URL"] == init["env"][0]["valueFrom"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    command = [sys.executable if init["command"][0] == "python" else "", *init["command"][1:]]
    environment = {"PATH": "/usr/bin:/bin", "HPS_DATABASE_URL": postgres_url, "HOME": "/tmp"}
    pods = [
        subprocess.Popen(command, env=environment, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for pod in pods:
        _, err = pod.communicate(timeout=120)
        assert pod.returncode == 0, err
    tables = {row[0] for row in query(postgres_url, "SELECT tablename FROM pg_tables")}
    assert {"studies", "trials", "version_info", "hps_alembic_version"} <= tables
    assert query(postgres_url, "SELECT COUNT(*) FROM version_info") == [(1,)]
