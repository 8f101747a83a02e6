"""``hps serve``: the service; ``hps up``: the service and local workers in one command."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from hps.cli.common import connect, console, fail
from hps.cli.studies import finish, load_spec
from hps.local import LocalServiceError, launch


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
        raise fail(problems) from None
    logging.basicConfig(format="%(levelname)s:     %(message)s")
    logging.getLogger("hps").setLevel(log_level.upper())  # the service's own lines, with uvicorn's
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        timeout_keep_alive=settings.keep_alive_s,
    )


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
    body = load_spec(submit_spec) if submit_spec else None
    env = {**os.environ, "HPS_DATABASE_URL": database_url}
    try:
        with launch(port=port, workers=workers, env=env, poll_s=1) as hps:
            try:
                url = hps.url
                console.print(f"hps is up: API {url}/v1  docs {url}/docs  database {database_url}")
                console.print(
                    f"dashboard {url}/dashboard (log in with the token in {hps.token_file})"
                )
                console.print(
                    f"{workers} worker(s) with {hps.threads} thread(s) each. Ctrl-C stops all."
                )
                if body is not None:
                    with connect(url) as client:
                        study = client.submit(body)
                        console.print(f"submitted study {study.id} ({study.name})")
                        finish(client, study.id)
                    if exit_when_done:
                        return
                hps.server.wait()
            except KeyboardInterrupt:
                console.print("stopping…")  # then the launcher stops them all
    except LocalServiceError as error:
        raise fail(str(error)) from None
    except KeyboardInterrupt:  # while the service was starting
        console.print("stopping…")
