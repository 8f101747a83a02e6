"""A worker's idle connection stays open between its requests for ``HPS_KEEP_ALIVE_S``.

uvicorn's default closed a connection idle for 5 s, so a worker reporting every ten seconds
opened a new one for nearly every request (BENCHMARKS.md, "Scale").
"""

from __future__ import annotations

import http.client
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import Service


def _health(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/v1/health")
    answer = connection.getresponse()
    answer.read()
    return answer.status


def _closed_by_the_service(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        return sock.recv(1) == b""  # end of stream: the peer closed it
    except TimeoutError:
        return False  # open, with nothing to read


@pytest.mark.parametrize("service", [{"HPS_KEEP_ALIVE_S": "3"}], indirect=True)
def test_an_idle_connection_is_kept_for_the_keep_alive_and_no_longer(service: Service) -> None:
    address = urlsplit(service.url)
    assert address.hostname is not None and address.port is not None
    connection = http.client.HTTPConnection(address.hostname, address.port)
    assert _health(connection) == 200
    sock = connection.sock
    time.sleep(1.5)
    assert not _closed_by_the_service(sock)
    assert _health(connection) == 200
    assert connection.sock is sock  # the same connection served the second request
    time.sleep(4.0)  # past this service's 3 s; uvicorn's own default (5 s) would still hold it
    assert _closed_by_the_service(sock)
    connection.close()
