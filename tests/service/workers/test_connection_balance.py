"""Keep-alive connections spread over the workers (``service.workers.connection_balance``): the
decisions of one worker against its siblings' counts, and the real gunicorn server moving
connections that all landed on one worker."""

import http.client
import os
import signal
import time
from pathlib import Path

import pytest
from support.images import encode
from support.service import table_of

from service import metrics
from service.workers.connection_balance import ConnectionBalance


def balance_of(table, slot: int = 0, *, serving: bool = True) -> ConnectionBalance:
    balance = ConnectionBalance(table, slot, serving=lambda: serving)
    balance.end_window()  # the first window says whether it serves
    return balance


def connections(count: int) -> list[object]:
    return [object() for _ in range(count)]


def closes(balance: ConnectionBalance, requests: list) -> int:
    """How many of ``requests`` (one per connection, answered at once) close their connection."""
    closed = 0
    for connection in requests:
        closed += balance.request_started(connection)
        balance.request_finished(connection)
    return closed


def handed_off() -> float:
    return metrics.CONNECTIONS_HANDED_OFF._value.get()


def test_a_crowded_worker_hands_off_half_its_excess_per_window():
    table = table_of(2)
    table.set_connections(1, 1)  # the sibling: 1 connection, 63 here
    mine = balance_of(table)
    clients = connections(63)
    assert closes(mine, clients) == 0  # nothing decided before a window ends
    mine.end_window()
    before = handed_off()
    assert closes(mine, clients) == 16  # mean 32: excess 31, half of it (rounded up)
    assert handed_off() - before == 16
    mine.end_window()  # the 16 closed connections are not counted
    assert table.serving_connections() == [47, 1]
    assert closes(mine, clients) == 12  # mean 24: excess 23, half of it (rounded up)


@pytest.mark.parametrize(("mine", "sibling"), [(34, 30), (40, 24), (2, 0), (12, 4)])
def test_an_even_or_small_split_moves_nothing(mine, sibling):
    table = table_of(2)
    table.set_connections(1, sibling)
    balance = balance_of(table)
    clients = connections(mine)
    closes(balance, clients)
    balance.end_window()
    assert closes(balance, clients) == 0
    assert table.serving_connections() == [mine, sibling]


def test_a_slow_request_counts_in_every_window_until_it_is_answered():
    """A request that takes longer than a window (a big model, a crowded worker) still holds
    its connection: it counts until answered."""
    table = table_of(2)
    table.set_connections(1, 0)
    mine = balance_of(table)
    slow = connections(10)
    for connection in slow:
        assert not mine.request_started(connection)
    mine.end_window()
    mine.end_window()  # no new request in this window: the 10 still wait
    assert table.serving_connections() == [10, 0]
    for connection in slow:
        mine.request_finished(connection)
    mine.end_window()
    mine.end_window()
    assert table.serving_connections() == [0, 0]


def test_connections_move_only_between_workers_that_serve():
    table = table_of(2)  # the sibling is still loading: NOT_SERVING
    mine = balance_of(table)
    clients = connections(60)
    closes(mine, clients)
    mine.end_window()
    assert closes(mine, clients) == 0  # nowhere to go
    loading = balance_of(table, 1, serving=False)
    assert table.serving_connections() == [60]  # it says that it does not serve
    before = handed_off()
    assert closes(loading, connections(5)) == 5  # and sends every client it got elsewhere
    assert handed_off() - before == 5
    table.set_connections(1, 0)  # it serves now, with none: connections move to it
    mine.end_window()
    assert closes(mine, clients) == 15  # mean 30: half the excess of 30


def test_a_stopped_worker_stops_serving_in_the_table():
    table = table_of(2)
    table.set_connections(1, 0)
    mine = balance_of(table)
    closes(mine, connections(30))
    mine.end_window()
    mine.stop()
    assert table.serving_connections() == [0]
    assert closes(mine, connections(30)) == 0


# ----------------------------------------------------------------------------- real server

def _owners(port: int, pids: list[int]) -> dict[int, int]:
    """Which worker holds each established connection to ``port``: client port -> pid, from
    /proc/net/tcp (the server side's socket inode) and the workers' open files."""
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if int(local.rsplit(":", 1)[1], 16) == port and state == "01":  # ESTABLISHED
            inodes[f"socket:[{inode}]"] = int(remote.rsplit(":", 1)[1], 16)
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if target in inodes:
                owners[inodes[target]] = pid
    return owners


def _piled_up_connections(server, count: int) -> list[http.client.HTTPConnection]:
    """``count`` keep-alive connections that all landed on one worker: the other is stopped
    (SIGSTOP) until the first has accepted them all."""
    pids = server.wait_workers(2)
    host, port = server.url.removeprefix("http://").split(":")
    connections = [http.client.HTTPConnection(host, int(port), timeout=30) for _ in range(count)]
    os.kill(pids[1], signal.SIGSTOP)
    try:
        for connection in connections:
            connection.connect()
        server.wait_until(lambda: _spread(server, connections) == [0, count],
                          "one worker accepting every connection", timeout=10)
    finally:
        os.kill(pids[1], signal.SIGCONT)
    return connections


def _predict(connection: http.client.HTTPConnection, body: bytes) -> None:
    """One request on ``connection``; it reconnects by itself after a ``Connection: close``.
    Every request says it comes through a proxy: uvicorn trusts loopback's X-Forwarded-For and
    gives all of them one client address, so only the sockets tell the connections apart."""
    connection.request("POST", "/predict", body=body, headers={
        "Content-Type": "image/png", "X-Forwarded-For": "203.0.113.7"})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    response.read()


def _spread(server, connections: list[http.client.HTTPConnection]) -> list[int]:
    """How many of ``connections`` each worker holds, fewest first."""
    ports = {c.sock.getsockname()[1] for c in connections if c.sock is not None}
    owners = _owners(int(server.url.rsplit(":", 1)[1]), server.worker_pids())
    per_worker = dict.fromkeys(server.worker_pids(), 0)
    for port in ports & owners.keys():
        per_worker[owners[port]] += 1
    return sorted(per_worker.values())


@pytest.mark.parametrize("enabled", ["1", "0"])
def test_gunicorn_workers_spread_connections_that_all_landed_on_one(start_server,
                                                                    trained_registry, images,
                                                                    enabled):
    """16 keep-alive connections all accepted by one worker: with balancing the crowded worker
    closes some after their answer, the clients reconnect, and the other worker ends up with a
    fair part of them. Without it (CONNECTION_BALANCE=0) all 16 stay where they landed."""
    server = start_server(trained_registry, CONNECTION_BALANCE=enabled)
    server.wait_live()
    server.wait_versions(1)
    body = encode(images[0])
    connections = _piled_up_connections(server, 16)
    try:
        assert _spread(server, connections) == [0, 16]
        before = sum(server.metric("^imgclf_connections_handed_off_total"))
        deadline = time.monotonic() + (10.0 if enabled == "1" else 2.0)
        while time.monotonic() < deadline and _spread(server, connections)[0] < 4:
            for connection in connections:
                _predict(connection, body)
        spread = _spread(server, connections)
        moved = sum(server.metric("^imgclf_connections_handed_off_total")) - before
        if enabled == "1":
            assert spread[0] >= 4, spread
            assert moved >= 4
        else:
            assert spread == [0, 16]
            assert moved == 0
    finally:
        for connection in connections:
            connection.close()
