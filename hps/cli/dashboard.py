"""``hps dashboard``: where a running service's Optuna dashboard is, or one of its own.

Every service serves the dashboard at ``/dashboard`` behind its tokens (a read token is enough:
the login form there sets a cookie). Without a service at hand, ``--database-url`` serves a
read-only one on a database directly, without auth, on the loopback address.
"""

from __future__ import annotations

import ipaddress
import webbrowser
from typing import Annotated

import typer

from hps.cli.common import DEFAULT_URL, UrlOption, console, out
from hps.cli.common import fail as _fail
from hps.client import Client

LOGIN_HINT = (
    "Log in with a token that has the read scope: `hps token create --scope read --name browser`,"
    " or the admin token in the service's token file (hps.token)."
)


def dashboard(
    url: UrlOption = DEFAULT_URL,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open it in the default web browser.")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Serve a read-only dashboard on this database (SQLAlchemy URL) instead, "
            "without auth: e.g. sqlite:///./hps.db while the service is stopped.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="With --database-url: the address to listen on (loopback only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="With --database-url: the port to listen on.")] = 8080,
) -> None:
    """Show the Optuna dashboard of a running service (or, with --database-url, serve one)."""
    if database_url is not None:
        _serve(database_url, host, port, open_browser)
        return
    base = url.rstrip("/")
    with Client(base, retries=0) as client:
        if not client.health():
            raise _fail(f"no hps service answers at {base}: start one with `hps serve` or `hps up`")
    out.print(f"{base}/dashboard")
    console.print(LOGIN_HINT)
    if open_browser:
        webbrowser.open(f"{base}/dashboard")


def _serve(database_url: str, host: str, port: int, open_browser: bool) -> None:
    # No tokens guard this one, so it must not be reachable from other machines.
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise _fail(f"--host {host}: this dashboard has no auth, so it listens on loopback only")
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from service.dashboard import standalone

    try:
        app = standalone(database_url)
    except (SQLAlchemyError, ValueError) as error:
        raise _fail(f"cannot open {database_url}: {error}") from None
    address = f"http://{host}:{port}/dashboard"
    console.print(f"read-only dashboard on {database_url}: {address}  (Ctrl-C stops it)")
    if open_browser:
        webbrowser.open(address)
    uvicorn.run(app, host=host, port=port, log_level="warning")
