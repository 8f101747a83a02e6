"""The ``hps`` command: run the service and workers, submit studies, watch them.

Exit codes: 0 success, 1 the study finished without a single completed trial, 2 an error
(bad spec, service unreachable, bad option).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from api_schemas import StudyRead, StudyState
from hps.client import ApiError, Client, HpsClientError

app = typer.Typer(
    help="hps: hyperparameter search for optimizer studies (which optimizer, lr and warmup?).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)
out = Console()

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = Annotated[
    str, typer.Option("--url", envvar="HPS_URL", help="Base URL of the hps service.")
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@contextlib.contextmanager
def _client(url: str) -> Iterator[Client]:
    try:
        with Client(url, retries=3) as client:
            yield client
    except ApiError as error:
        details = "\n".join(f"  - {e.message}" for e in error.body.errors)
        raise _fail(error.body.message if not details else f"invalid request:\n{details}") from None
    except HpsClientError as error:
        hint = "Is the service running? Start it with `hps serve` or `hps up`."
        raise _fail(f"{error}\n{hint}") from None


def _load_spec(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise _fail(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise _fail(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise _fail(f"{path} must hold a mapping (a study spec), not {type(data).__name__}")
    return data


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="HPS_HOST", help="Address to listen on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(envvar="HPS_PORT", help="Port to listen on.")] = 8000,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="HPS_DATABASE_URL", help="SQLAlchemy URL (default: sqlite:///./hps.db)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the hps service (API at /v1, OpenAPI docs at /docs)."""
    import uvicorn

    from service import Settings, create_app

    overrides: dict[str, Any] = {"host": host, "port": port}
    if database_url:
        overrides["database_url"] = database_url
    settings = Settings(**overrides)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


@app.command()
def worker(
    url: UrlOption = DEFAULT_URL,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    once: Annotated[bool, typer.Option("--once", help="Run one trial, then exit.")] = False,
    max_trials: Annotated[
        int | None, typer.Option(min=1, help="Exit after this many trials.")
    ] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit as soon as the service has no work.")
    ] = False,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between asks when idle.")] = 2.0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")
    ] = None,
) -> None:
    """Lease trials from the service and train them until stopped (SIGTERM/Ctrl-C)."""
    if device not in ("auto", "cpu", "cuda"):
        raise _fail(f"--device must be auto, cpu or cuda, not {device!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    import torch

    from worker.device import DeviceUnavailable, choose_device
    from worker.loop import Worker

    if threads:
        torch.set_num_threads(threads)
    try:
        chosen = choose_device(device)  # type: ignore[arg-type]
    except DeviceUnavailable as error:
        raise _fail(str(error)) from None
    with Client(url) as client:
        w = Worker(client, chosen, max_trials=1 if once else max_trials, burst=burst, poll_s=poll)
        w.install_signal_handlers()
        try:
            w.run()
        except HpsClientError as error:
            raise _fail(str(error)) from None
        console.print(repr(w))


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="Study spec, YAML or JSON.", exists=False)],
    url: UrlOption = DEFAULT_URL,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the study finishes.")] = False,
) -> None:
    """Submit a study; prints its id (and, with --wait, its result)."""
    body = _load_spec(spec)
    with _client(url) as client:
        study = client.submit(body)
        out.print(study.id)
        if wait:
            _finish(client, study.id)


@app.command()
def status(
    study: Annotated[int, typer.Argument(help="Study id.")],
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Show a study's state, trial counts and best trial."""
    with _client(url) as client:
        _print_study(client.study(study))


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port for the service.")] = 8000,
    workers: Annotated[int, typer.Option(min=0, help="Local worker processes.")] = 2,
    database_url: Annotated[
        str, typer.Option(envvar="HPS_DATABASE_URL", help="SQLAlchemy URL.")
    ] = "sqlite:///./hps.db",
    submit_spec: Annotated[
        Path | None, typer.Option("--submit", help="Submit this study spec once up.")
    ] = None,
    exit_when_done: Annotated[
        bool, typer.Option("--exit-when-done", help="With --submit: stop when it finishes.")
    ] = False,
) -> None:
    """Start the service and local workers on the embedded SQLite default, in one command."""
    url = f"http://127.0.0.1:{port}"
    body = _load_spec(submit_spec) if submit_spec else None
    env = {**os.environ, "HPS_DATABASE_URL": database_url}
    hps = [sys.executable, "-m", "hps"]
    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    children: list[subprocess.Popen[bytes]] = []
    try:
        serve = [*hps, "serve", "--port", str(port), "--log-level", "warning"]
        server = subprocess.Popen(serve, env=env)
        children.append(server)
        _await_health(url, server)
        for _ in range(workers):
            cmd = [*hps, "worker", "--url", url, "--threads", threads, "--poll", "1"]
            children.append(subprocess.Popen(cmd, env=env))
        console.print(f"hps is up: API {url}/v1  docs {url}/docs  database {database_url}")
        console.print(f"{workers} worker(s) with {threads} thread(s) each. Ctrl-C stops all.")
        if body is not None:
            with _client(url) as client:
                study = client.submit(body)
                console.print(f"submitted study {study.id} ({study.name})")
                _finish(client, study.id)
            if exit_when_done:
                return
        server.wait()
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        _stop(children)


def _await_health(url: str, server: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    with Client(url, retries=0) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise _fail(f"the service exited with code {server.returncode} (port in use?)")
            if client.health():
                return
            time.sleep(0.2)
    raise _fail(f"the service did not answer at {url} within {timeout_s:g} s")


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    # Workers first, so that a trial in hand is reported as interrupted while the API still runs.
    for child in reversed(children):
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def _finish(client: Client, study_id: int, poll_s: float = 2.0) -> None:
    """Wait for the study to finish, showing progress; exit 1 if no trial completed."""
    study = _watch(client, study_id, poll_s)
    _print_study(study)
    if study.counts.completed == 0:
        raise typer.Exit(1)


def _watch(client: Client, study_id: int, poll_s: float) -> StudyRead:
    last = ""
    while True:
        study = client.study(study_id)
        c = study.counts
        done = c.completed + c.pruned + c.failed - c.retried
        best = "—" if study.best_trial is None else f"{study.best_trial.value:.4g}"
        line = (
            f"study {study.id}: {done}/{study.spec.n_trials} done "
            f"({c.running} running, {c.failed} failed), best {best}"
        )
        if line != last:
            console.print(line)
            last = line
        if study.state == StudyState.FINISHED:
            return study
        time.sleep(poll_s)


def _print_study(study: StudyRead) -> None:
    c = study.counts
    table = Table(title=f"study {study.id} · {study.name} · {study.state.value}")
    for column in ("completed", "pruned", "failed", "retried", "running", "waiting"):
        table.add_column(column, justify="right")
    table.add_row(
        *(
            str(getattr(c, k))
            for k in ("completed", "pruned", "failed", "retried", "running", "waiting")
        )
    )
    out.print(table)
    best = study.best_trial
    if best is not None:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()
        )
        out.print(
            f"best trial #{best.number}: {study.spec.objective.metric} = "
            f"{best.value:.4f}  ({params})"
        )
