"""The hps service, as ``hps serve`` runs it, that kills itself (SIGKILL) at one database write.

``HPS_KILL_PATH`` arms it: only the ``HPS_KILL_NTH``-th request (default the first) whose path
ends with it counts. ``HPS_KILL_AT=k`` kills
the process just before the k-th *write event* of those requests: an INSERT, UPDATE or DELETE
sent to the database, the COMMIT of a transaction that wrote, or the answer (so that a step
that committed but never answered is covered too). Every write event of the armed request is on
stderr as ``hps-fault k: ...``, so a run with a large k tells how many there are.

Run as ``python -m tests.e2e.killable_service PORT``; the rest of the settings come from the
``HPS_*`` variables, as for ``hps serve``. With ``--zygote`` it imports everything once and then
forks one such service per line ``{"port": ..., "env": {...}, "log": path}`` read from stdin,
answering each with the child's pid: a test that starts the service forty times then pays for
the imports once. A test helper, never part of the service.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import os
import signal
import sys
import threading
from typing import Any

import uvicorn
from sqlalchemy import event
from sqlalchemy.engine import Engine

from service.app import create_app
from service.settings import Settings

ARMED_PATH = ""
KILL_AT = 0
KILL_NTH = 1


def _arm() -> None:
    global ARMED_PATH, KILL_AT, KILL_NTH
    ARMED_PATH = os.environ.get("HPS_KILL_PATH", "")
    KILL_AT = int(os.environ.get("HPS_KILL_AT", "0"))
    KILL_NTH = int(os.environ.get("HPS_KILL_NTH", "1"))


WRITES = ("INSERT", "UPDATE", "DELETE")

_armed: contextvars.ContextVar[bool] = contextvars.ContextVar("armed", default=False)
_events = itertools.count(1)
_requests = itertools.count(1)
_lock = threading.Lock()


def _event(what: str) -> None:
    if not _armed.get():
        return
    with _lock:
        k = next(_events)
    print(f"hps-fault {k}: {what[:120]!r}", file=sys.stderr, flush=True)
    if k == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


@event.listens_for(Engine, "before_cursor_execute")
def _before_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    if statement.lstrip().upper().startswith(WRITES):
        conn.info["hps_wrote"] = True
        _event(statement)


@event.listens_for(Engine, "commit")
def _before_commit(conn: Any) -> None:
    if conn.info.pop("hps_wrote", False):
        _event("COMMIT")


@event.listens_for(Engine, "rollback")
def _on_rollback(conn: Any) -> None:
    conn.info.pop("hps_wrote", None)


class _Armed:
    """Tells the hooks which request is running (the threadpool copies the context)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if ARMED_PATH and scope["path"].endswith(ARMED_PATH):
            with _lock:
                _armed.set(next(_requests) == KILL_NTH)

        async def answer(message: Any) -> None:
            if message["type"] == "http.response.start":
                _event(f"answer {message['status']}")
            await send(message)

        await self.app(scope, receive, answer)


def serve(port: int) -> None:
    _arm()
    app = _Armed(create_app(Settings()))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def zygote() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped as they die
    for line in sys.stdin:
        order = json.loads(line)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.environ.update(order["env"])
            log = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(log, 1)
            os.dup2(log, 2)
            try:
                serve(int(order["port"]))
            finally:
                os._exit(0)
        print(pid, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--zygote":
        zygote()
    else:
        serve(int(sys.argv[1]))
