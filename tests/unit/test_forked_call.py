"""Work forked off the event loop (speed/forked_call.py): the child's answer comes back, its failures come back as
ChildFailed with what went wrong, a child past its time is killed and reaped, the loop goes on while a child
works, and without fork the call runs in a worker thread of this process (waited for without a loop: right
here)."""
from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from guywire.speed.forked_call import ChildFailed, ForkedCall, call_forked, can_fork

pytestmark = [pytest.mark.asyncio(loop_scope="function"),
              pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs a POSIX system")]
GUARD_S = 30  # only ends a test that would otherwise wait forever; no assertion is about time


@pytest.fixture(autouse=True)
def forking(monkeypatch):
    monkeypatch.delenv("GUYWIRE_PARALLEL", raising=False)


def where() -> tuple[int, int]:
    return os.getpid(), threading.get_ident()


def raises() -> None:
    raise ValueError("replicas is -3, below 0")


def unpicklable():
    return lambda: None


def dies() -> None:
    os._exit(3)


def sleeps() -> None:
    time.sleep(GUARD_S * 10)


def waits_for(path: str) -> str:
    for _ in range(GUARD_S * 200):
        if os.path.exists(path):
            return "seen"
        time.sleep(0.005)
    return "never seen"  # run where the test waits, it would give up here: the test fails, never hangs


async def until_gone(pid: int) -> bool:
    """True once ``pid`` is reaped (a zombie still answers signal 0; a reaped pid does not)."""
    for _ in range(GUARD_S * 100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_the_childs_answer_comes_back_and_the_child_is_reaped():
    call = ForkedCall(where)
    assert call.forked and can_fork()
    pid, _ = await call.result(GUARD_S)
    assert pid == call.pid and pid != os.getpid()
    assert await until_gone(call.pid)
    assert await call_forked(pow, 2, 10, timeout=GUARD_S) == 1024


async def test_an_exception_in_the_child_is_ChildFailed_with_its_message():
    call = ForkedCall(raises)
    with pytest.raises(ChildFailed, match=r"raised ValueError: replicas is -3, below 0"):
        await call.result(GUARD_S)
    assert await until_gone(call.pid)


async def test_an_answer_that_cannot_be_pickled_is_ChildFailed():
    with pytest.raises(ChildFailed, match=r"cannot be pickled"):
        await call_forked(unpicklable, timeout=GUARD_S)


async def test_a_child_that_dies_without_an_answer_is_ChildFailed():
    call = ForkedCall(dies)
    with pytest.raises(ChildFailed, match=r"without a complete answer"):
        await call.result(GUARD_S)
    assert await until_gone(call.pid)


async def test_a_child_past_its_time_is_killed_and_reaped():
    call = ForkedCall(sleeps)
    with pytest.raises(ChildFailed, match=r"longer than 0.2 s and was stopped"):
        await call.result(0.2)
    assert await until_gone(call.pid)  # killed, and no zombie left


async def test_a_cancelled_wait_kills_and_reaps_the_child():
    call = ForkedCall(sleeps)
    waiting = asyncio.ensure_future(call.result(GUARD_S))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await until_gone(call.pid)


async def test_the_event_loop_goes_on_while_the_child_works(tmp_path):
    release = tmp_path / "release"
    call = ForkedCall(waits_for, str(release))
    answer = asyncio.ensure_future(call.result(GUARD_S))
    ticks = 0
    for _ in range(50):  # the loop runs other work while the child has not answered
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 50 and not answer.done()
    release.touch()
    assert await answer == "seen"
    assert await until_gone(call.pid)


async def test_without_fork_the_call_runs_in_a_worker_thread_of_this_process(monkeypatch):
    monkeypatch.setenv("GUYWIRE_PARALLEL", "0")
    assert not can_fork()
    call = ForkedCall(where)
    assert not call.forked
    pid, thread = await call.result(GUARD_S)
    assert pid == os.getpid() and thread != threading.get_ident()
    with pytest.raises(ValueError, match="replicas is -3"):  # a thread's exception is the call's own
        await ForkedCall(raises).result(GUARD_S)


async def test_waiting_without_a_loop_gives_the_answer_or_ChildFailed(monkeypatch):
    call = ForkedCall(where)
    assert call.wait()[0] == call.pid != os.getpid()
    assert await until_gone(call.pid)
    with pytest.raises(ChildFailed, match="replicas is -3"):
        ForkedCall(raises).wait()
    monkeypatch.setenv("GUYWIRE_PARALLEL", "0")
    assert ForkedCall(where).wait() == (os.getpid(), threading.get_ident())  # no fork: run here
