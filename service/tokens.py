"""API tokens: create, list, revoke, authenticate; and the local admin token file.

A secret is ``hps_`` + 32 random bytes (URL-safe base64). The database holds only its SHA-256:
a secret with 256 bits of entropy cannot be guessed from its hash, so a slow password KDF
(bcrypt, argon2) would add a cost to every request and no safety. Whoever reads the table
learns names and scopes, never a usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select

from api_schemas.tokens import TOKEN_PREFIX, Scope, TokenCreate, TokenCreated, TokenRead
from service.errors import NotFound
from service.models import SessionRow, TokenRow
from service.store import Store
from service.studies import Clock, utc_now

log = logging.getLogger("hps.service")

LOCAL_ADMIN = "local-admin"
"""The name of the admin token the service writes to its token file."""

AUTH_CACHE_TTL = timedelta(seconds=5)
"""How long this process trusts a token it has checked without asking the database again.

Every worker request carries a token, and a lookup per request was a sixth of a report's cost.
A revocation made through this process takes effect at once (it clears the cache); one made
through another replica, within this long."""
AUTH_CACHE_SIZE = 4096
"""Live tokens remembered at most; the cache starts over when full (only real tokens get in)."""

LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token: workers report every few seconds,
and a write per request would make every read a write on SQLite's single writer."""


SESSION_TTL = timedelta(hours=12)
"""How long a dashboard login lasts: a working day, then the form again."""
SESSION_PREFIX = "hps_session_"


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _read(row: TokenRow) -> TokenRead:
    return TokenRead(
        id=row.id,
        name=row.name,
        scopes=[Scope(s) for s in row.scopes.split(",")],
        created_at=_aware(row.created_at),
        last_used_at=None if row.last_used_at is None else _aware(row.last_used_at),
        revoked=row.revoked,
    )


class Tokens:
    """The token half of the domain layer."""

    def __init__(self, store: Store, clock: Clock = utc_now) -> None:
        self._store = store
        self._clock = clock
        self._checked: dict[str, tuple[datetime, TokenRead]] = {}
        self._checked_lock = threading.Lock()

    def create(self, request: TokenCreate) -> TokenCreated:
        """A new token; its secret is in the answer and nowhere else."""
        secret = new_secret()
        row = TokenRow(
            name=request.name,
            token_hash=hash_secret(secret),
            scopes=",".join(request.scopes),
            created_at=self._clock(),
        )
        with self._store.session() as session:
            session.add(row)
            session.flush()
            created = _read(row)
        return TokenCreated(**created.model_dump(), token=secret)

    def all(self) -> list[TokenRead]:
        with self._store.session() as session:
            return [_read(row) for row in session.scalars(select(TokenRow).order_by(TokenRow.id))]

    def revoke(self, token_id: int) -> TokenRead:
        """Revoke a token for good; revoking it again changes nothing."""
        with self._store.session() as session:
            row = session.get(TokenRow, token_id)
            if row is None:
                raise NotFound(f"token {token_id} does not exist")
            row.revoked = True
            revoked = _read(row)
        with self._checked_lock:
            self._checked.clear()
        return revoked

    def cached(self, secret: str) -> TokenRead | None:
        """The live token whose secret this is, if this process checked it within
        AUTH_CACHE_TTL; None means: ask ``authenticate``."""
        with self._checked_lock:
            hit = self._checked.get(hash_secret(secret))
        if hit is None or self._clock() - hit[0] >= AUTH_CACHE_TTL:
            return None
        return hit[1]

    def authenticate(self, secret: str) -> TokenRead | None:
        """The live token whose secret this is, or None (unknown or revoked)."""
        digest = hash_secret(secret)
        token = self._lookup(digest)
        if token is not None:
            with self._checked_lock:
                if len(self._checked) >= AUTH_CACHE_SIZE:
                    self._checked.clear()
                self._checked[digest] = (self._clock(), token)
        return token

    def _lookup(self, digest: str) -> TokenRead | None:
        with self._store.session() as session:
            row = session.scalars(select(TokenRow).where(TokenRow.token_hash == digest)).first()
            # The lookup is by an index on the hash, so its timing tells at most a prefix of
            # the hash, which does not help to forge a secret; the constant-time comparison
            # keeps the final check from leaking even that.
            if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked:
                return None
            now = self._clock()
            if row.last_used_at is None or now - _aware(row.last_used_at) >= LAST_USED_RESOLUTION:
                row.last_used_at = now
            return _read(row)

    def open_session(self, token: TokenRead) -> str:
        """A new dashboard session for ``token``, lasting SESSION_TTL; returns its secret.

        The browser's cookie holds this secret, never the token's: a stolen cookie dies with
        its session (logout, expiry, the token's revocation) and cannot call the API.
        """
        secret = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        with self._store.session() as session:
            # Expired sessions are swept here, on the rare write, not on every request.
            session.execute(delete(SessionRow).where(SessionRow.expires_at <= now))
            session.add(
                SessionRow(
                    secret_hash=hash_secret(secret),
                    token_id=token.id,
                    created_at=now,
                    expires_at=now + SESSION_TTL,
                )
            )
        return secret

    def session_token(self, secret: str) -> TokenRead | None:
        """The live token whose session this is, or None (unknown, expired, logged out, or
        its token revoked)."""
        with self._store.session() as session:
            row = session.get(SessionRow, hash_secret(secret))
            if row is None or _aware(row.expires_at) <= self._clock():
                return None
            token = session.get(TokenRow, row.token_id)
            return None if token is None or token.revoked else _read(token)

    def close_session(self, secret: str) -> None:
        """End a session (logout); an unknown one is ignored."""
        with self._store.session() as session:
            session.execute(delete(SessionRow).where(SessionRow.secret_hash == hash_secret(secret)))

    def ensure_admin_file(self, path: Path) -> bool:
        """Make sure ``path`` holds a live admin token of this database; True if one was made.

        On first start there is none, so one is created. A missing file, or one holding a
        token this database does not know or has revoked (another project's, a deleted one),
        gets a new one too: whoever can start the service on this database owns it anyway.
        """
        try:
            current = path.read_text().strip()
        except FileNotFoundError:
            current = ""
        token = self.authenticate(current) if current else None
        if token is not None and Scope.ADMIN in token.scopes:
            if path.stat().st_mode & 0o077:
                log.warning("the token file %s is readable by others: chmod 600 it", path)
            return False
        created = self.create(TokenCreate(name=LOCAL_ADMIN, scopes=[Scope.ADMIN]))
        write_secret(path, created.token)
        log.info("created admin token %d; its secret is in %s", created.id, path.resolve())
        return True


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path``, readable and writable by this user only, atomically.

    The file is created with mode 0600 (O_EXCL: never through an existing file or link), so it is
    never readable by others, not even for an instant; then it replaces ``path`` in one rename.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secret + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
