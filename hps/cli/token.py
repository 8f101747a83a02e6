"""``hps token``: create, list and revoke API tokens (an admin token is needed for all three)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from api_schemas.tokens import Scope
from hps.cli.common import DEFAULT_URL, TokenOption, UrlOption, connect, console, out

app = typer.Typer(
    help="Create, list and revoke API tokens. Scopes: read; submit (implies read); worker "
    "(lease and report trials); admin (everything, tokens included).",
    no_args_is_help=True,
)


@app.command()
def create(
    scope: Annotated[
        list[Scope],
        typer.Option("--scope", help="A scope to grant; repeat for several.", show_default=False),
    ],
    name: Annotated[str, typer.Option(help="What the token is for, e.g. ci or gpu-box-3.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Create a token and print its secret, once, on stdout (the service keeps only a hash)."""
    with connect(url, token) as client:
        created = client.create_token(name, scope)
    scopes = ", ".join(created.scopes)
    console.print(f"created token {created.id} {created.name!r} ({scopes}); its secret:")
    # Plain stdout, nothing else on it: `export HPS_TOKEN=$(hps token create ...)` works.
    typer.echo(created.token)


@app.command("list")
def list_tokens(url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """List every token: id, name, scopes, when it was last used, whether it is revoked."""
    with connect(url, token) as client:
        tokens = client.tokens()
    table = Table()
    for column in ("id", "name", "scopes", "created", "last used", "revoked"):
        table.add_column(column)
    for t in tokens:
        last_used = "—" if t.last_used_at is None else f"{t.last_used_at:%Y-%m-%d %H:%M}"
        table.add_row(
            str(t.id),
            t.name,
            ", ".join(t.scopes),
            f"{t.created_at:%Y-%m-%d %H:%M}",
            last_used,
            "yes" if t.revoked else "",
        )
    out.print(table)


@app.command()
def revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (see `hps token list`).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Revoke a token: every request with it is refused from now on."""
    with connect(url, token) as client:
        revoked = client.revoke_token(token_id)
    console.print(f"revoked token {revoked.id} {revoked.name!r}")
