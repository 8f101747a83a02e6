"""The ``hps`` command: run the service and workers, submit studies, watch them.

Exit codes: 0 success, 1 the study finished without a single completed trial, 2 an error
(bad spec, service unreachable, bad option).
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from api_schemas import StudyRead
from hps import dashboard_cmd, gate_cmd, report_cmd, token_cmd, trials_cmd
from hps.cli_common import AUTH_HINTS, DEFAULT_URL, TokenOption, UrlOption, console, out
from hps.cli_common import connect as _client
from hps.cli_common import fail as _fail
from hps.client import ApiError, Client, HpsClientError
from hps.credentials import CredentialsError, resolve_token
from hps.local import HPS, LocalServiceError, await_health, stop
from hps.progress import StoppedWatching, watch

app = typer.Typer(
    help="hps: hyperparameter search for optimizer studies (which optimizer, lr and warmup?).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(token_cmd.app, name="token")
app.command("report")(report_cmd.report)
app.command("gate")(gate_cmd.gate)
app.command("trials")(trials_cmd.trials)
app.command("dashboard")(dashboard_cmd.dashboard)


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
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth", help="Accept requests without a token (only on a loopback --host)."
        ),
    ] = False,
) -> None:
    """Run the hps service (API at /v1, OpenAPI docs at /docs).

    Auth is on: on first start the service writes an admin token to ./hps.token (mode 0600;
    HPS_TOKEN_FILE), where the CLI and local workers find it.
    """
    import uvicorn
    from pydantic import ValidationError

    from service import Settings, create_app

    overrides: dict[str, Any] = {"host": host, "port": port}
    if database_url:
        overrides["database_url"] = database_url
    if no_auth:
        overrides["auth"] = False
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        raise _fail(problems) from None
    logging.basicConfig(format="%(levelname)s:     %(message)s")
    logging.getLogger("hps").setLevel(log_level.upper())  # the service's own lines, with uvicorn's
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


@app.command()
def worker(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
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
        int | None,
        typer.Option(
            min=1,
            envvar="HPS_WORKER_THREADS",
            help="CPU threads for torch. Default: torch's choice (every core); with several "
            "workers on one machine give each cores / workers (`hps up` does).",
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            help="'all' or indices such as 0,1: one worker process per GPU, each with its own "
            "CUDA_VISIBLE_DEVICES (and cores / GPUs threads unless --threads is given)."
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Start this many CPU worker processes, each with cores / N threads (unless "
            "--threads is given); stopping this command stops them all.",
        ),
    ] = None,
) -> None:
    """Lease trials from the service and train them until stopped (SIGTERM/Ctrl-C)."""
    if device not in ("auto", "cpu", "cuda"):
        raise _fail(f"--device must be auto, cpu or cuda, not {device!r}")
    if processes is not None:
        if gpus is not None or device == "cuda":
            raise _fail("--processes starts CPU workers; for one worker per GPU use --gpus")
        _worker_processes(processes, url, token, once, max_trials, burst, poll, threads)
        return
    if gpus is not None:
        _worker_per_gpu(gpus, url, token, once, max_trials, burst, poll, threads)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    from hps.gpus import other_workers, oversubscription_warning

    warning = oversubscription_warning(threads, other_workers())
    if warning:
        logging.getLogger("hps.worker").warning(warning)
    import torch

    from worker.device import DeviceUnavailable, choose_device
    from worker.loop import Worker

    if threads:
        torch.set_num_threads(threads)
    try:
        chosen = choose_device(device)  # type: ignore[arg-type]
    except DeviceUnavailable as error:
        raise _fail(str(error)) from None
    try:
        resolved = resolve_token(token)
    except CredentialsError as error:
        raise _fail(str(error)) from None
    with Client(url, token=resolved) as client:
        w = Worker(client, chosen, max_trials=1 if once else max_trials, burst=burst, poll_s=poll)
        w.install_signal_handlers()
        try:
            w.run()
        except HpsClientError as error:
            hint = AUTH_HINTS.get(error.status) if isinstance(error, ApiError) else None
            raise _fail(str(error) if hint is None else f"{error}\n{hint}") from None
        console.print(repr(w))


def _worker_per_gpu(
    gpus: str,
    url: str,
    token: str | None,
    once: bool,
    max_trials: int | None,
    burst: bool,
    poll: float,
    threads: int | None,
) -> None:
    import torch

    from hps.gpus import GpuSpecError, child_commands, parse_gpus, supervise

    try:
        indices = parse_gpus(gpus, torch.cuda.device_count())
    except GpuSpecError as error:
        raise _fail(str(error)) from None
    args = _child_args(url, token, once, max_trials, burst, poll)
    console.print(f"starting {len(indices)} worker(s) on GPU(s) {', '.join(map(str, indices))}")
    raise typer.Exit(supervise(child_commands(args, indices, threads)))


def _worker_processes(
    processes: int,
    url: str,
    token: str | None,
    once: bool,
    max_trials: int | None,
    burst: bool,
    poll: float,
    threads: int | None,
) -> None:
    from hps.gpus import cpu_child_commands, supervise

    children = cpu_child_commands(
        _child_args(url, token, once, max_trials, burst, poll), processes, threads
    )
    console.print(f"starting {processes} CPU worker(s) with {children[0][0][-1]} thread(s) each")
    raise typer.Exit(supervise(children))


def _child_args(
    url: str, token: str | None, once: bool, max_trials: int | None, burst: bool, poll: float
) -> list[str]:
    """The options every child of ``--gpus`` or ``--processes`` is started with."""
    # The token travels in the environment, never on a command line (where `ps` shows it).
    if token:
        os.environ["HPS_TOKEN"] = token
    args = ["--url", url, "--poll", str(poll)]
    args += ["--once"] if once else []
    args += ["--burst"] if burst else []
    args += ["--max-trials", str(max_trials)] if max_trials else []
    return args


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="Study spec, YAML or JSON.", exists=False)],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the study finishes.")] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Resubmit under this key (from an earlier submit's error): returns the study "
            "that submit created instead of a second one. Default: a new key.",
        ),
    ] = None,
) -> None:
    """Submit a study; prints its id (and, with --wait, its result).

    The wait for the answer grows with the grid it queues; retries carry one idempotency key,
    so a slow or lost answer never makes a second study.
    """
    body = _load_spec(spec)
    with _client(url, token) as client:
        study = client.submit(body, idempotency_key=idempotency_key)
        out.print(study.id)
        if wait:
            _finish(client, study.id)


@app.command()
def status(
    study: Annotated[int, typer.Argument(help="Study id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show a study's state, trial counts and best trial."""
    with _client(url, token) as client:
        _print_study(client.study(study))


@app.command()
def cancel(
    study: Annotated[int, typer.Argument(help="Study id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Stop a study: nothing more is leased, running trials stop at their next report."""
    with _client(url, token) as client:
        _print_study(client.cancel(study))


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
    hps = HPS
    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    children: list[subprocess.Popen[bytes]] = []
    try:
        serve = [*hps, "serve", "--port", str(port), "--log-level", "warning"]
        server = subprocess.Popen(serve, env=env)
        children.append(server)
        try:
            await_health(url, server)
        except LocalServiceError as error:
            raise _fail(str(error)) from None
        for _ in range(workers):
            cmd = [*hps, "worker", "--url", url, "--threads", threads, "--poll", "1"]
            children.append(subprocess.Popen(cmd, env=env))
        console.print(f"hps is up: API {url}/v1  docs {url}/docs  database {database_url}")
        token_file = env.get("HPS_TOKEN_FILE", "hps.token")
        console.print(f"dashboard {url}/dashboard (log in with the token in {token_file})")
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
        stop(children)


def _finish(client: Client, study_id: int, poll_s: float = 2.0) -> None:
    """Wait for the study to finish, showing progress; exit 1 if no trial completed.

    Ctrl-C stops the waiting, not the study (exit code 130, as for any interrupted command).
    """
    try:
        study = watch(client, study_id, console, poll_s)
    except StoppedWatching as stopped:
        console.print(str(stopped))
        raise typer.Exit(130) from None
    _print_study(study)
    if study.counts.completed == 0:
        raise typer.Exit(1)


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
