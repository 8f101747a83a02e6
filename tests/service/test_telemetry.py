"""``HPS_TELEMETRY``: FastAPI's OpenTelemetry spans reach the process's provider only when asked.

Each case runs in its own interpreter: OpenTelemetry's global tracer provider can be set once
per process, and a configured one would turn FastAPI's telemetry on for every later app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A tracer provider that records span names, built on the OpenTelemetry API alone (the SDK is
# not a dependency); FastAPI uses the global provider once one is configured.
PROBE = """
import json, sys
from contextlib import contextmanager
from opentelemetry import trace
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings

names = []

class Tracer(trace.Tracer):
    def start_span(self, name, *args, **kwargs):
        names.append(name)
        return trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)

    @contextmanager
    def start_as_current_span(self, name, *args, **kwargs):
        yield self.start_span(name)

class Provider(trace.TracerProvider):
    def get_tracer(self, *args, **kwargs):
        return Tracer()

trace.set_tracer_provider(Provider())
asked = {"telemetry": True} if sys.argv[2] == "on" else {}
settings = Settings(database_url=sys.argv[1], auth=False, **asked)
with TestClient(create_app(settings)) as client:
    assert client.get("/v1/health").status_code == 200
print(json.dumps(names))
"""


def spans(tmp_path: Path, telemetry: str) -> list[str]:
    url = f"sqlite:///{tmp_path / 'hps.db'}"
    # Without the caller's HPS_* settings: an HPS_TELEMETRY there would decide the default case.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPS_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, url, telemetry],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names: list[str] = json.loads(done.stdout.splitlines()[-1])
    return names


def test_no_spans_by_default_even_with_a_provider_configured(tmp_path: Path) -> None:
    assert spans(tmp_path, "default") == []


def test_asked_for_a_request_is_a_span(tmp_path: Path) -> None:
    names = spans(tmp_path, "on")
    # The request's span, and the operation spans inside it (its route is set on the span later).
    assert names[0] == "GET" and "fastapi.endpoint" in names, names
