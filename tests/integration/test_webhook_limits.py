"""The webhook bounds what one client may hold: connections that send nothing, headers that trickle in, a body
that never comes, kept-alive idlers, and more connections than the cap are all closed; well-formed reviews are
still answered. Also: request.kind as a string is a 400, a kind from an unknown group is not judged, and a large
review is judged in a child forked while the engine is locked (a thread where there is no fork), one at a time."""
from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from guywire.engine.admission import Admission
from guywire.operator.webhook import SWITCH_INTERVAL_S, WebhookServer, WebhookSettings
from tests.integration.test_webhook_server import _insecure, post, review, tls  # noqa: F401 - tls is a fixture
from tests.unit.test_admission import example_engine, example_object, request

pytestmark = pytest.mark.asyncio(loop_scope="module")
CAP = 6
LARGE = 64 * 1024
GUARD_S = 30  # only ends a test that would otherwise wait forever; no assertion is about time


@pytest.fixture(scope="module")
async def server(tls):
    _, cert, key = tls
    engine = example_engine()
    srv = WebhookServer(lambda: Admission(engine), WebhookSettings(
        host="127.0.0.1", port=0, cert=str(cert), key=str(key), handshake_timeout=1, header_timeout=0.5,
        body_timeout=0.5, idle_timeout=0.5, max_connections=CAP, large_body=LARGE))
    await srv.start()
    yield srv
    await srv.stop()


async def connect(server):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port, ssl=_insecure(),
                                                          server_hostname="x"), GUARD_S)


async def closed_by_server(reader) -> bool:
    """True once the server closes the connection (EOF or reset)."""
    try:
        while await asyncio.wait_for(reader.read(65536), GUARD_S):
            pass
    except (ConnectionError, OSError):
        pass
    return True


async def until_no_connections(server) -> None:
    for _ in range(GUARD_S * 20):
        if not server.guards.open:
            return
        await asyncio.sleep(0.05)


async def test_a_connection_that_sends_nothing_is_closed(server):
    reader, writer = await connect(server)
    assert await closed_by_server(reader)
    writer.close()


async def test_headers_that_trickle_in_are_cut_off(server):
    reader, writer = await connect(server)
    writer.write(b"POST /validate HTTP/1.1\r\nHost: x\r\n")
    closed = asyncio.ensure_future(closed_by_server(reader))
    for _ in range(GUARD_S * 10):  # one byte every 0.1 s, never a blank line
        if closed.done():
            break
        try:
            writer.write(b"X")
            await writer.drain()
        except (ConnectionError, OSError):
            break
        await asyncio.sleep(0.1)
    assert await closed
    writer.close()


async def test_a_body_that_never_comes_is_answered_408(server):
    reader, writer = await connect(server)
    writer.write(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    answer = await asyncio.wait_for(reader.read(), GUARD_S)
    assert answer.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_a_kept_alive_connection_is_closed_once_idle(server):
    reader, writer = await connect(server)
    body = review(request(example_object("Deployment", "gateway"), "UPDATE", old=example_object("Deployment", "gateway")))
    writer.write(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD_S)
    assert first.startswith(b"HTTP/1.1 200")
    assert await closed_by_server(reader)
    writer.close()


@pytest.fixture(scope="module")
async def capped(tls):
    """A server whose timeouts are far away, so that only the cap closes connections."""
    _, cert, key = tls
    engine = example_engine()
    srv = WebhookServer(lambda: Admission(engine), WebhookSettings(
        host="127.0.0.1", port=0, cert=str(cert), key=str(key), handshake_timeout=GUARD_S,
        header_timeout=GUARD_S, body_timeout=GUARD_S, idle_timeout=GUARD_S, max_connections=CAP))
    await srv.start()
    yield srv
    await srv.stop()


def raw_review() -> bytes:
    body = review(request(example_object("Deployment", "gateway"), "UPDATE", old=example_object("Deployment", "gateway")))
    return (b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


async def answered(reader) -> bytes:
    """One whole answer read from a kept-alive connection: its status line and headers, then its body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD_S)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    await asyncio.wait_for(reader.readexactly(length), GUARD_S)
    return head


async def reviewed(reader, writer) -> bool:
    """Whether a review sent on this kept-alive connection is answered 200."""
    writer.write(raw_review())
    return (await answered(reader)).startswith(b"HTTP/1.1 200")


async def hang_up(server, connections) -> None:
    for _, writer in connections:
        writer.close()
    await until_no_connections(server)


def evicted(server) -> float:
    return server.metrics.webhook_connections_closed.labels("evicted")._value.get()


async def test_at_the_cap_a_new_connection_takes_the_place_of_the_oldest_that_was_never_answered(capped, tls):
    await until_no_connections(capped)
    used_reader, used_writer = await connect(capped)  # a client that uses its place, as the API server does
    assert await reviewed(used_reader, used_writer)
    silent = [await connect(capped) for _ in range(CAP - 1)]  # idle clients fill the rest
    assert len(capped.guards.open) == CAP
    before = evicted(capped)
    obj = example_object("Deployment", "gateway")
    status, _ = await post(capped, tls, review(request(obj, "UPDATE", old=obj)))  # a new client is answered
    assert status == 200
    assert await closed_by_server(silent[0][0])  # the oldest silent one made room for it
    assert evicted(capped) == before + 1
    assert len(capped.guards.open) <= CAP
    assert await reviewed(used_reader, used_writer)  # the answered client kept its place
    await hang_up(capped, [*silent, (used_reader, used_writer)])


async def test_at_the_cap_among_answered_clients_the_one_answered_longest_ago_makes_room(capped):
    await until_no_connections(capped)
    clients = [await connect(capped) for _ in range(CAP)]
    for reader, writer in clients:  # all answered once, the first one first
        assert await reviewed(reader, writer)
    first_reader, first_writer = clients[0]
    assert await reviewed(first_reader, first_writer)  # the first one again: the second now waited longest
    new_reader, new_writer = await connect(capped)
    assert await reviewed(new_reader, new_writer)
    assert await closed_by_server(clients[1][0])
    assert await reviewed(first_reader, first_writer)
    await hang_up(capped, [*clients, (new_reader, new_writer)])


async def test_at_the_cap_a_connection_being_answered_is_never_evicted(capped):
    await until_no_connections(capped)
    held = [await connect(capped) for _ in range(CAP)]
    guards = list(capped.guards.open.values())
    for guard in guards:  # as while each is being answered
        guard.phase = "busy"
    try:
        extra_reader, extra_writer = await connect(capped)
        assert await closed_by_server(extra_reader)  # no place to take: the new one is closed
        assert all(g.transport is not None and not g.transport.is_closing() for g in guards)
    finally:
        for guard in guards:
            guard.phase = "headers"
    assert len(capped.guards.open) == CAP
    await hang_up(capped, [*held, (extra_reader, extra_writer)])


async def test_request_kind_as_a_string_is_a_400(server, tls):
    req = request(example_object("Deployment", "gateway"))
    req["kind"] = "Deployment"
    status, answer = await post(server, tls, review(req))
    assert status == 400 and "request.kind must be an object" in answer["error"]


async def test_a_deployment_from_an_unknown_group_is_not_judged(server, tls):
    obj = example_object("Deployment", "llm-server")
    obj["metadata"]["name"] = "llm-server-evil"
    status, denied = await post(server, tls, review(request(obj)))
    assert status == 200 and denied["response"]["allowed"] is False  # apps/Deployment: judged and denied
    req = request({**obj, "apiVersion": "evil.io/v1"})
    req["kind"] = {"group": "evil.io", "version": "v1", "kind": "Deployment"}
    status, answer = await post(server, tls, review(req))
    assert status == 200 and answer["response"] == {"uid": req["uid"], "allowed": True}



def small_and_large() -> tuple[dict, dict]:
    small = example_object("Deployment", "gateway")
    large = example_object("Deployment", "gateway")
    large["metadata"]["annotations"]["example.com/padding"] = "x" * (2 * LARGE)
    return request(small, "UPDATE", old=small), request(large, "UPDATE", old=small)


async def judge_small_then_large(server, tls, record) -> tuple[int, int, dict, dict]:
    """A small review, then a large one, each decision recorded by ``record()`` where it is made: the two
    statuses, the large one's answer, and what this process decides for the large one itself."""
    real = server.admission_factory

    def watched():
        admission = real()
        decide = admission.decide

        def recording(req):
            record()
            return decide(req)
        admission.decide = recording
        return admission
    server.admission_factory = watched
    small_req, large_req = small_and_large()
    try:
        status, _ = await post(server, tls, review(small_req))
        status_large, answer = await post(server, tls, review(large_req))
    finally:
        server.admission_factory = real
    return status, status_large, answer, real().decide(large_req).review()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs a POSIX system")
async def test_a_large_review_is_judged_in_a_child_forked_while_the_engine_is_locked(server, tls, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.delenv("GUYWIRE_PARALLEL", raising=False)
    seen = tmp_path / "seen"  # a file, as the child's memory is its own: "pid locked" per decision

    def record():
        with open(seen, "a") as fh:
            fh.write(f"{os.getpid()} {server.engine_lock.locked()}\n")
    status, status_large, answer, in_process = await judge_small_then_large(server, tls, record)
    assert status == 200 and status_large == 200
    (small_pid, small_locked), (large_pid, large_locked) = [line.split() for line in seen.read_text().splitlines()]
    assert small_pid == str(os.getpid()) and small_locked == "False"  # the small one on the loop
    assert large_pid != str(os.getpid()) and large_locked == "True"  # forked while the engine was locked
    assert answer == in_process
    assert not server.engine_lock.locked() and not server.large_in_flight


async def test_without_fork_a_large_review_is_judged_in_a_thread_while_the_engine_is_locked(server, tls,
                                                                                             monkeypatch):
    monkeypatch.setenv("GUYWIRE_PARALLEL", "0")
    seen: list[tuple[bool, bool, float]] = []
    before = sys.getswitchinterval()
    status, status_large, answer, in_process = await judge_small_then_large(server, tls, lambda: seen.append(
        (threading.current_thread() is threading.main_thread(), server.engine_lock.locked(), sys.getswitchinterval())))
    assert status == 200 and status_large == 200
    assert seen == [(True, False, before), (False, True, SWITCH_INTERVAL_S)]  # the large one in a thread, locked
    assert sys.getswitchinterval() == before
    assert answer == in_process


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs a POSIX system")
async def test_a_large_review_whose_child_fails_is_answered_503_and_frees_the_slot(server, tls, monkeypatch,
                                                                                    caplog):
    monkeypatch.delenv("GUYWIRE_PARALLEL", raising=False)

    def broken():
        raise RuntimeError("the engine is gone")
    real, server.admission_factory = server.admission_factory, broken
    _, large_req = small_and_large()
    try:
        status_large, answer = await post(server, tls, review(large_req))
    finally:
        server.admission_factory = real
    assert status_large == 503 and "not judged" in answer["error"] and "engine is gone" not in answer["error"]
    assert any("RuntimeError: the engine is gone" in r.getMessage() for r in caplog.records)  # said in the log
    assert not server.large_in_flight and not server.engine_lock.locked()
    status, _ = await post(server, tls, review(large_req))  # the next large review is judged
    assert status == 200


async def test_a_second_large_review_is_answered_503_at_once_and_small_ones_still_judged(server, tls):
    server.large_in_flight = True  # as while a large review is being judged
    try:
        reader, writer = await connect(server)
        writer.write(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {4 * LARGE}\r\n\r\n".encode() + b"{" + b" " * 1000)
        answer = await asyncio.wait_for(reader.read(), GUARD_S)
        writer.close()
        obj = example_object("Deployment", "gateway")
        status, _ = await post(server, tls, review(request(obj, "UPDATE", old=obj)))
    finally:
        server.large_in_flight = False
    assert answer.startswith(b"HTTP/1.1 503") and b"overloaded" in answer
    assert status == 200


async def test_memory_is_handed_back_once_many_connections_have_come_and_gone(server):
    from guywire.operator.webhook import TRIM_AFTER_CLOSED

    trims: list[int] = []
    server.guards.trim = lambda: trims.append(len(server.guards.open))
    server.guards.closed_since_trim = 0
    try:
        for _ in range(TRIM_AFTER_CLOSED // CAP + 1):
            batch = [await connect(server) for _ in range(CAP)]
            for _, w in batch:
                w.close()
            await until_no_connections(server)
        for _ in range(GUARD_S * 20):
            if trims:
                break
            await asyncio.sleep(0.05)
    finally:
        from guywire.speed.memory import release_free_memory
        server.guards.trim = release_free_memory
    assert trims and trims[0] <= CAP


class _Asked:
    def __init__(self, query: dict):
        self.query = query


@pytest.mark.parametrize("query, budget", [
    ({}, 2.5), ({"timeout": "3s"}, 2.5), ({"timeout": "10s"}, 2.5), ({"timeout": "1s"}, 0.5),
    ({"timeout": "2s"}, 1.5), ({"timeout": "1m0s"}, 2.5), ({"timeout": "soon"}, 2.5), ({"timeout": "0s"}, 0.0),
])
async def test_a_large_review_s_budget_is_what_the_api_server_waits_less_the_answer_s_way_back(server, query,
                                                                                                budget):
    assert server.settings.large_timeout == 2.5
    assert server.large_budget(_Asked(query)) == pytest.approx(budget)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs a POSIX system")
async def test_a_large_review_does_not_wait_for_the_engine_past_the_api_server_s_timeout(server, tls,
                                                                                          monkeypatch):
    monkeypatch.delenv("GUYWIRE_PARALLEL", raising=False)
    _, large_req = small_and_large()
    await server.engine_lock.acquire()  # as while a full audit changes the engine
    try:
        status, answer = await post(server, tls, review(large_req), path="/validate/workloads?timeout=1s")
        assert server.engine_lock.locked()  # answered while the engine was still busy, not after
    finally:
        server.engine_lock.release()
    assert status == 503 and "not judged" in answer["error"]
    assert not server.large_in_flight
    status, _ = await post(server, tls, review(large_req), path="/validate/workloads?timeout=3s")
    assert status == 200  # the engine free again: judged
