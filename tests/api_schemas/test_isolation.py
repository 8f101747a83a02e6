"""api_schemas is the contract clients and workers import: it must not drag in the service's or
the trainer's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("torch", "optuna", "sqlalchemy", "fastapi")

PROBE = """
import importlib, json, pkgutil, sys
import api_schemas
names = [m.name for m in pkgutil.walk_packages(api_schemas.__path__, "api_schemas.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"submodules": names, "loaded": sorted(sys.modules)}))
"""


def test_importing_api_schemas_loads_no_heavy_dependency() -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=root, check=True
    )
    report = json.loads(result.stdout)
    # The walk found the modules, so the check below covers them.
    assert {"api_schemas.search_space", "api_schemas.studies", "api_schemas.trials"} <= set(
        report["submodules"]
    )
    heavy = [
        name
        for name in report["loaded"]
        if any(name == top or name.startswith(f"{top}.") for top in FORBIDDEN)
    ]
    assert heavy == []
