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


async def test_connections_beyond_the_cap_are_closed_and_reviews_still_answered(server, tls):
    await until_no_connections(server)
    held = [await connect(server) for _ in range(CAP)]
    extra_reader, extra_writer = await connect(server)
    assert await closed_by_server(extra_reader)
    assert len(server.guards.open) <= CAP
    for _, w in held:
        w.close()
    extra_writer.close()
    await until_no_connections(server)
    obj = example_object("Deployment", "gateway")
    status, _ = await post(server, tls, review(request(obj, "UPDATE", old=obj)))
    assert status == 200


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
        from guywire.operator.index import release_free_memory
        server.guards.trim = release_free_memory
    assert trims and trims[0] <= CAP
