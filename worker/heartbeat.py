"""Heartbeats: keep a trial's lease alive from a background thread while the trial trains.

Reports renew the lease too, but a trial whose reports are further apart than the lease (a
slow step, a long evaluation, a large ``report_every``) would lose its lease without these:
the service would fail it as ``lease_expired`` and hand its parameters to another worker.
A beat is sent only when nothing renewed the lease for an interval: tell ``renewed()`` after
each report, and a trial that reports often sends none (a thousand workers' needless beats
would be most of what a service answers).

    with Heartbeats(client, assignment) as beats:
        train(..., should_stop=lambda: beats.lost.is_set())  # and beats.renewed() per report
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Self

from api_schemas import TrialAssignment
from hps.client import ApiError, Client, HpsClientError

log = logging.getLogger("hps.worker")

MIN_INTERVAL_S = 0.2
"""Never beat faster than this, whatever the lease: a tiny lease must not flood the service."""
JOIN_TIMEOUT_S = 10.0
"""How long stopping waits for a heartbeat already on the wire; it is a daemon thread after."""


def heartbeat_interval(assignment: TrialAssignment, now: datetime | None = None) -> float:
    """A third of the lease: one heartbeat can be lost, and the next still arrives in time.

    The lease length is ``assignment.lease_seconds``; a service too old to send it gave only
    ``lease_expires_at``, so the length is read off that (on the worker's clock).
    """
    lease_s = assignment.lease_seconds
    if lease_s is None:
        lease_s = (assignment.lease_expires_at - (now or datetime.now(UTC))).total_seconds()
    return max(MIN_INTERVAL_S, lease_s / 3)


class Heartbeats:
    """Sends a heartbeat for one trial every ``interval_s`` until stopped; a context manager.

    ``lost`` is set when the service refuses a heartbeat (409): the lease expired or another
    worker holds the trial, so training it further is wasted work. A network failure is logged
    and the next beat tries again; the thread never ends the trial for it, since the service
    may come back before the lease runs out.
    """

    def __init__(
        self, client: Client, assignment: TrialAssignment, *, interval_s: float | None = None
    ) -> None:
        self.trial_id = assignment.trial_id
        self.interval_s = interval_s if interval_s is not None else heartbeat_interval(assignment)
        self.lost = threading.Event()
        self.sent = 0
        self._client = client
        self._token = assignment.lease_token
        self._done = threading.Event()
        self._renewed_at = time.monotonic()  # the lease was just granted
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{self.trial_id}", daemon=True
        )

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else "stopped" if self._done.is_set() else "beating"
        every = f"every {self.interval_s:g} s"
        return f"<Heartbeats trial {self.trial_id} {every}: {self.sent} sent, {state}>"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """No heartbeat starts after this returns; one already on the wire is waited for."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=JOIN_TIMEOUT_S)

    def renewed(self) -> None:
        """The lease was renewed just now (a report was accepted): no beat for an interval."""
        self._renewed_at = time.monotonic()

    def _run(self) -> None:
        while True:
            due = self._renewed_at + self.interval_s
            if self._done.wait(max(0.0, due - time.monotonic())):
                return
            if time.monotonic() < self._renewed_at + self.interval_s:
                continue  # renewed while this waited: wait out the new interval instead
            self._renewed_at = time.monotonic()
            try:
                self._client.heartbeat(self.trial_id, self._token)
            except ApiError as error:
                if error.status == 409:
                    if not self._done.is_set():  # after the trial ended, a 409 is expected
                        log.warning("trial %d: heartbeat refused: %s", self.trial_id, error)
                        self.lost.set()
                    return
                log.warning("trial %d: heartbeat failed: %s", self.trial_id, error)
            except HpsClientError as error:  # the service is unreachable: try again next beat
                log.warning("trial %d: heartbeat not delivered: %s", self.trial_id, error)
            except Exception:  # a bug here must not end the thread and so the lease
                log.exception("trial %d: heartbeat raised", self.trial_id)
            else:
                self.sent += 1
