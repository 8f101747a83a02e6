"""Which token the CLI and workers send, and where they find it.

In order: ``--token`` (or ``HPS_TOKEN``); else the token file, ``HPS_TOKEN_FILE`` or
``./hps.token``, the file a service started in this directory writes its admin token to. With
none of them, requests go without a token, and a service with auth on answers 401.
"""

from __future__ import annotations

import os
from pathlib import Path

from api_schemas.tokens import DEFAULT_TOKEN_FILE
from hps.client import HpsClientError

TOKEN_ENV = "HPS_TOKEN"
TOKEN_FILE_ENV = "HPS_TOKEN_FILE"


class CredentialsError(HpsClientError):
    """A token file that was asked for cannot be read."""


def token_file() -> Path:
    """The token file the CLI reads: ``HPS_TOKEN_FILE``, or ``./hps.token``."""
    return Path(os.environ.get(TOKEN_FILE_ENV) or DEFAULT_TOKEN_FILE)


def resolve_token(explicit: str | None = None) -> str | None:
    """``explicit`` (from ``--token``/``HPS_TOKEN``), else the token file's; None if neither.

    A missing default file just means no token; a missing file named by ``HPS_TOKEN_FILE`` is
    an error, since someone asked for it.
    """
    if explicit:
        return explicit.strip()
    path = token_file()
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        if os.environ.get(TOKEN_FILE_ENV):
            raise CredentialsError(f"{TOKEN_FILE_ENV}={path}: no such file") from None
        return None
    except OSError as error:
        raise CredentialsError(f"cannot read the token file {path}: {error.strerror}") from None
