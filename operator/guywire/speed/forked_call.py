"""Running one costly, read-only call in a forked child, so it neither holds this process's GIL nor waits for it.

A thread cannot take CPU-bound Python work off the event loop: the two share the GIL, and every time the loop
comes back from a socket read it waits for the thread to hand the GIL over (a convoy: an admission review that
costs 3 ms alone took 140 ms while a 2 MB review was judged in a thread, bench_webhook_hostile.py). A forked
child has its own interpreter and a copy-on-write snapshot of everything the parent indexed at the moment of
the fork, judges there at a lower CPU priority (``nice``), and sends back its pickled answer through a pipe
that the parent's event loop reads without blocking.

What the child may do: compute and return a picklable value. It must not log, write metrics, or take a lock
another thread might have held at the fork; a child that hangs anyway is killed at the timeout. Where there
is no fork (not POSIX, ``GUYWIRE_PARALLEL=0``, or the fork failed), the call runs in a worker thread instead,
which cannot be stopped: the caller then holds whatever keeps ``fn``'s state consistent until the result.
"""
from __future__ import annotations

import gc
import os
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import asyncio


class ChildFailed(RuntimeError):
    """The child died, ran past its time, or raised (the message says which)."""


def can_fork() -> bool:
    """Whether work may be forked off here (the CLI's parsing, the webhook's large reviews): a POSIX fork and
    no ``GUYWIRE_PARALLEL=0``."""
    return hasattr(os, "fork") and os.environ.get("GUYWIRE_PARALLEL", "1") != "0"


def _child(write_fd: int, fn: Callable[..., Any], args: tuple, nice: int) -> None:
    import pickle

    status = 1
    try:
        # The child lives for one call: a collection would only touch (and so copy) the parent's whole heap.
        gc.disable()
        _leave_signals_to_the_parent()
        _close_inherited_fds(keep=write_fd)
        try:
            if nice:
                os.nice(nice)
        except OSError:
            pass
        try:
            outcome: tuple = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - told to the parent, which raises it there
            outcome = ("raised", f"{type(exc).__name__}: {exc}")
        try:
            data = memoryview(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as exc:  # noqa: BLE001 - an answer that cannot travel is told as such
            data = memoryview(pickle.dumps(("raised", f"the answer cannot be pickled ({type(exc).__name__}: {exc})")))
        while data:
            data = data[os.write(write_fd, data):]
        status = 0
    finally:
        os._exit(status)  # no atexit, no buffered output of the parent's flushed twice


def _leave_signals_to_the_parent() -> None:
    """A signal meant for the parent's event loop (SIGTERM sent to the process group) must not reach the loop
    through the wakeup fd the child shares with it: in the child it takes its default action, ending the child."""
    import signal

    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no such signal here
        pass


def _close_inherited_fds(keep: int) -> None:
    """The child holds none of the parent's sockets open: a connection the parent closes meanwhile is closed
    at once, not when the child ends. Standard input, output and error stay."""
    try:
        limit = os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        limit = 65536
    os.closerange(3, keep)
    os.closerange(keep + 1, max(limit, keep + 1))


class ForkedCall:
    """``fn(*args)`` started in a forked child at ``nice`` priority (at construction, synchronously: construct it
    where the state ``fn`` reads is consistent; the child sees that state as it was at the fork, whatever changes
    after). :meth:`result` waits for its value without blocking the event loop."""

    def __init__(self, fn: Callable[..., Any], *args: Any, nice: int = 10):
        self.fn, self.args, self.pid, self.read_fd = fn, args, 0, -1
        if not can_fork():
            return
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            return
        if pid == 0:
            os.close(read_fd)
            _child(write_fd, fn, args, nice)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.pid, self.read_fd = pid, read_fd

    @property
    def forked(self) -> bool:
        """Whether a child runs ``fn``; if not, :meth:`result` runs it in a worker thread."""
        return self.pid != 0

    async def result(self, timeout: float) -> Any:
        """The value, unpickled. Raises :class:`ChildFailed` when the child raised, died or took longer than
        ``timeout`` seconds (it is killed). Without a child (no fork), ``fn`` runs in a worker thread, which no
        timeout can stop."""
        import asyncio  # imported where used, as pickle and signal are: the CLI imports this module at start
        if not self.pid:
            return await asyncio.to_thread(self.fn, *self.args)
        loop = asyncio.get_running_loop()
        chunks: list[bytes] = []
        done: asyncio.Future = loop.create_future()
        read_fd, pid = self.read_fd, self.pid

        def readable() -> None:
            try:
                while True:
                    chunk = os.read(read_fd, 1 << 20)
                    if not chunk:
                        if not done.done():
                            done.set_result(None)
                        return
                    chunks.append(chunk)
            except BlockingIOError:
                return
            except OSError as exc:
                if not done.done():
                    done.set_exception(ChildFailed(f"reading the child's answer failed: {exc}"))

        loop.add_reader(read_fd, readable)
        try:
            await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            raise ChildFailed(f"the child took longer than {timeout:g} s and was stopped") from None
        finally:
            loop.remove_reader(read_fd)
            os.close(read_fd)
            if not done.done() or done.cancelled() or done.exception() is not None:  # timed out or broken
                _kill(pid)
            _reap(loop, pid)
        return _answer(b"".join(chunks))

    def wait(self) -> Any:
        """The value, waited for here (blocking), by a caller with no event loop that did its own share of the
        work meanwhile (the CLI's parsing). Raises :class:`ChildFailed` as :meth:`result` does, without a time
        limit. Without a child (no fork), ``fn`` runs here."""
        if not self.pid:
            return self.fn(*self.args)
        chunks: list[bytes] = []
        os.set_blocking(self.read_fd, True)
        try:
            while chunk := os.read(self.read_fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(self.read_fd)
            os.waitpid(self.pid, 0)
        return _answer(b"".join(chunks))


def _answer(data: bytes) -> Any:
    """The value a child sent, or :class:`ChildFailed` for what it raised or an answer cut short."""
    import pickle

    try:
        kind, value = pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - a child that died mid-answer
        raise ChildFailed(f"the child ended without a complete answer ({type(exc).__name__})") from None
    if kind != "ok":
        raise ChildFailed(f"the call raised {value}")
    return value


async def call_forked(fn: Callable[..., Any], *args: Any, timeout: float, nice: int = 10) -> Any:
    """``fn(*args)`` in a forked child started now; see :class:`ForkedCall`."""
    return await ForkedCall(fn, *args, nice=nice).result(timeout)


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(loop: asyncio.AbstractEventLoop, pid: int, tries: int = 200) -> None:
    """Collect the child's exit status without blocking the loop: it exits right after its answer, so this
    almost always succeeds at once; else it is retried every 10 ms (then killed, then waited for)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return  # reaped by someone else (a SIGCHLD handler)
    if done:
        return
    if tries <= 0:
        _kill(pid)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        return
    loop.call_later(0.01, _reap, loop, pid, tries - 1)
