"""The local launcher (``hps up``, ``hps gate --local``) with real processes: however its block
ends, it leaves no service and no worker running."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from hps.client import Client
from hps.local import LocalServiceError, free_port, launch

pytestmark = pytest.mark.e2e


def _environment(directory: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("HPS_TOKEN", "HPS_TOKEN_FILE")}
    return {
        **clean,
        "HPS_DATABASE_URL": f"sqlite:///{directory / 'hps.db'}",
        "HPS_TOKEN_FILE": str(directory / "hps.token"),
    }


def _children() -> list[int]:
    """The pids of this process's live children (from /proc), zombies excluded."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):  # gone meanwhile
            continue
        if int(ppid) == os.getpid() and state != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc (not Linux)")
@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_an_error_or_ctrl_c_in_the_block_stops_the_service_and_every_worker(
    tmp_path: Path, interruption: type[BaseException]
) -> None:
    before = _children()
    with (
        pytest.raises(interruption),
        launch(
            port=free_port(),
            workers=2,
            env=_environment(tmp_path),
            poll_s=0.5,
            threads=1,
            cwd=tmp_path,
            log=tmp_path / "hps.log",
        ) as service,
    ):
        with Client(service.url, token=service.token) as client:
            assert client.health()
            assert client.studies() == []  # the token is the one the service wrote
        service.check()
        assert len(_children()) == len(before) + 3, "the service and two workers run"
        raise interruption
    assert service.server.returncode is not None
    assert all(w.returncode is not None for w in service.workers)
    assert _children() == before
    with Client(service.url, retries=0) as client:
        assert not client.health()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc (not Linux)")
def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    before = _children()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        with (
            pytest.raises(LocalServiceError, match=rf"port {port} is taken") as raised,
            launch(
                port=port, workers=2, env=_environment(tmp_path), poll_s=0.5, log=tmp_path / "log"
            ),
        ):
            pytest.fail("the block ran without a service")
    assert "--port" in str(raised.value)
    assert _children() == before


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc (not Linux)")
def test_a_second_hps_on_the_port_of_a_running_one_is_refused_not_reported_up(
    tmp_path: Path,
) -> None:
    """It was "hps is up" and exit 0: the running service answered the new one's health check."""
    port = free_port()
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with launch(port=port, workers=0, env=_environment(tmp_path / "first"), poll_s=0.5) as first:
        with (
            pytest.raises(LocalServiceError, match=rf"port {port} is taken"),
            launch(port=port, workers=0, env=_environment(tmp_path / "second"), poll_s=0.5),
        ):
            pytest.fail("a second service on a taken port")
        first.check()  # the first one serves on, untouched
