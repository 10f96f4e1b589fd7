"""``BodyBudget.read``: the body of ``POST /predict`` straight from ASGI ``receive``, with the
per-body limit (413), the per-worker in-flight budget (503) and client hang-ups (499). Every
refusal must give back the bytes it had counted, or the worker would refuse forever."""

import asyncio

import pytest

from service.api.body_budget import BodyBudget
from service.errors import ClientDisconnectedError, PayloadTooLargeError, QueueFullError


def receiver(*messages: dict):
    """An ASGI ``receive`` that answers ``messages`` in order and fails if asked for more."""
    pending = list(messages)

    async def receive() -> dict:
        assert pending, "read past the last message"
        return pending.pop(0)

    receive.pending = pending  # type: ignore[attr-defined]
    return receive


def body(data: bytes, more: bool = False) -> dict:
    return {"type": "http.request", "body": data, "more_body": more}


def read(budget: BodyBudget, receive, announced: int | None) -> bytes:
    return asyncio.run(budget.read(receive, announced))


def test_a_body_in_chunks_is_joined_and_counted_until_released():
    budget = BodyBudget(1000, max_body=100)
    data = read(budget, receiver(body(b"ab", True), body(b"", True), body(b"cd")), 4)
    assert data == b"abcd" and budget.in_use == 4
    budget.release(len(data))
    assert budget.in_use == 0


def test_an_announced_body_over_the_limit_is_refused_before_reading():
    budget = BodyBudget(1000, max_body=100)
    receive = receiver(body(b"x" * 101))
    with pytest.raises(PayloadTooLargeError, match="MAX_BODY_BYTES=100"):
        read(budget, receive, 101)
    assert receive.pending and budget.in_use == 0  # nothing was read


def test_a_streamed_body_is_refused_once_it_passes_the_limit():
    budget = BodyBudget(1000, max_body=100)
    receive = receiver(body(b"x" * 60, True), body(b"x" * 60, True), body(b"x" * 60))
    with pytest.raises(PayloadTooLargeError) as refused:
        read(budget, receive, None)  # chunked: no Content-Length
    assert refused.value.status_code == 413
    assert len(receive.pending) == 1 and budget.in_use == 0  # stopped at 120 bytes


def test_a_client_hanging_up_mid_body_gives_its_bytes_back():
    budget = BodyBudget(1000, max_body=100)
    with pytest.raises(ClientDisconnectedError) as gone:
        read(budget, receiver(body(b"x" * 10, True), {"type": "http.disconnect"}), 50)
    assert gone.value.status_code == 499 and budget.in_use == 0


def test_bodies_beyond_the_in_flight_budget_are_503_but_an_idle_worker_takes_any():
    budget = BodyBudget(100, max_body=1000)
    held = read(budget, receiver(body(b"x" * 150)), 150)  # alone: admitted over the budget
    with pytest.raises(QueueFullError, match="MAX_INFLIGHT_BYTES=100"):
        read(budget, receiver(body(b"y" * 10)), 10)  # announced: refused before reading
    with pytest.raises(QueueFullError):
        read(budget, receiver(body(b"y" * 10)), None)  # not announced: refused as it arrives
    assert budget.in_use == len(held)
    budget.release(len(held))
    assert read(budget, receiver(body(b"y" * 10)), 10) == b"y" * 10
