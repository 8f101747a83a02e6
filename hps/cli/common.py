"""What every ``hps`` command shares: the --url and --token options, the two consoles (results
on stdout, messages on stderr), and a client whose errors become messages and exit code 2."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from hps.client import ApiError, Client, HpsClientError, SubmitUncertain
from hps.credentials import CredentialsError, resolve_token

console = Console(stderr=True, soft_wrap=True)
out = Console()

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = Annotated[
    str, typer.Option("--url", envvar="HPS_URL", help="Base URL of the hps service.")
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="HPS_TOKEN",
        show_default=False,
        help="API token (default: the token file, $HPS_TOKEN_FILE or ./hps.token).",
    ),
]

RUNNING_HINT = "Is the service running? Start it with `hps serve` or `hps up`."
AUTH_HINTS = {
    401: "Pass a token with --token or HPS_TOKEN, or run where the service's hps.token is "
    "(HPS_TOKEN_FILE); an admin creates tokens with `hps token create`.",
    403: "Ask an admin for a token with that scope (`hps token create --scope ...`).",
}


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


@contextlib.contextmanager
def connect(url: str, token: str | None = None) -> Iterator[Client]:
    """A client for ``url`` with the resolved token; its errors end the command with code 2."""
    try:
        with Client(url, token=resolve_token(token), retries=3) as client:
            yield client
    except ApiError as error:
        details = "\n".join(f"  - {e.message}" for e in error.body.errors)
        message = error.body.message if not details else f"invalid request:\n{details}"
        hint = AUTH_HINTS.get(error.status)
        raise fail(message if hint is None else f"{message}\n{hint}") from None
    except CredentialsError as error:
        raise fail(str(error)) from None
    except SubmitUncertain as error:
        # It may have arrived, so the message says so; "is it running?" only if it looks down.
        down = str(error).startswith("cannot reach")
        raise fail(f"{error}\n{RUNNING_HINT}" if down else str(error)) from None
    except HpsClientError as error:
        raise fail(f"{error}\n{RUNNING_HINT}") from None
