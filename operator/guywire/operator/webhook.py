"""The validating admission webhook server: HTTPS from certificate files, reloaded when they change.

Runs inside the operator's event loop and reads the operator's engine, so decisions
see the same indexes. A decision only reads the engine: an ordinary review is judged
synchronously on the loop, so no watch event interleaves with it; a large one (above
``large_body``) is judged in a forked child at a lower CPU priority (speed/forked_call.py),
forked while the webhook holds the engine lock that every writer of the engine takes, so the
child sees the engine between two changes and the loop keeps the GIL to answer the others.
One large review is judged at a time: a second one meanwhile is answered 503 at once (shed,
never queued), and one not judged within its budget (``large_timeout``, or less when the API server's
``?timeout=`` is shorter; the wait for the engine lock counts) is stopped and answered 503. At the
connection cap a new connection takes the place of one not being answered (Guards.victim).
Malformed bodies get a 4xx that says what is wrong; the API server's failurePolicy
Ignore means a crash or a timeout here never blocks a deployment.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..engine.admission import Admission, BadReview, parse_review
from ..model.units import parse_duration
from ..speed.forked_call import ChildFailed, ForkedCall
from .metrics import OperatorMetrics
from ..speed.memory import release_free_memory

log = logging.getLogger("guywire.webhook")
MAX_BODY = 3 * 1024 * 1024
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d{1,12})[ \t]*\r\n", re.IGNORECASE)
_SHED_BODY = b'{"error": "guywire is overloaded (another large review is being judged); not evaluated."}'
SHED_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                 b"Connection: close\r\nContent-Length: " + str(len(_SHED_BODY)).encode() + b"\r\n\r\n" + _SHED_BODY)
MAX_PEM_BYTES = 1024 * 1024  # a certificate chain or key file read for the webhook
# Where no child can be forked and a worker thread judges a large review instead, the interpreter hands the
# GIL over every 1 ms instead of 5 ms, so the event loop waits less for it between the small reviews it answers.
SWITCH_INTERVAL_S = 0.001
# A large review's child runs at the lowest priority: it takes the CPU the event loop leaves (weight 15 against
# the loop's 1024), so a small review arriving meanwhile gets the core at once.
LARGE_NICE = 19
TRIM_AFTER_CLOSED = 64  # connections closed before the freed heap is handed back (see Guards.release)
# Kept from the time the API server says it waits (?timeout=) for the answer to travel back and be read.
ANSWER_MARGIN_S = 0.5


@dataclass
class WebhookSettings:
    host: str = "0.0.0.0"
    port: int = 0
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    reload_interval: float = 10.0
    # Bounds on what one client may hold (docs/limits.md). The API server sends a review within
    # milliseconds of connecting and keeps few connections per replica; anything slower is not it.
    handshake_timeout: float = 5.0  # TLS handshake
    header_timeout: float = 5.0  # from the connection (or the first byte after idling) to a request's full headers
    body_timeout: float = 10.0  # a request's body, once its headers are in
    idle_timeout: float = 30.0  # a kept-alive connection with no request
    # Open at once. At the cap a new connection takes the place of one not being answered (Guards.victim), so
    # idle or slow clients cannot lock the API server out; only when every one is being answered is it closed.
    max_connections: int = 256
    large_body: int = 256 * 1024  # a review above this is judged off the event loop, one at a time; others: 503
    # A large review not judged by then is answered 503: a little under guywire's default timeoutSeconds (3 s),
    # after which the API server applies the failurePolicy and throws a later answer away anyway. Less when the
    # API server says it waits less (WebhookServer.large_budget); the wait for the engine lock counts too.
    large_timeout: float = 2.5


class ConnectionGuard(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped: counted against the cap, and closed when its
    request's headers do not arrive in time or it idles (aiohttp itself times neither out before the
    first request). The handler tells it when a request starts and ends."""

    def __init__(self, guards: "Guards", inner: Any):
        self.guards, self.inner = guards, inner
        self.transport: Any = None
        self.timer: asyncio.TimerHandle | None = None
        self.phase = "headers"  # headers (a request is arriving) | busy (being answered) | idle (kept alive)
        self.fresh = True  # the next bytes begin a request
        self.held = False
        self.served = False  # an answer was sent on it: a client that uses its place
        self.turn = 0  # when it was admitted or last answered, in the Guards' own count (no clock needed)

    def _arm(self, seconds: float, reason: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._expire, reason)

    def _expire(self, reason: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        self.guards.metrics.webhook_connections_closed.labels(reason).inc()
        if self.transport is not None:
            self.transport.abort()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if not self.guards.admit(self):
            self.guards.metrics.webhook_connections_closed.labels("cap").inc()
            transport.abort()
            return
        self.held = True
        self.turn = self.guards.next_turn()
        self.inner.connection_made(transport)
        self._arm(self.guards.settings.header_timeout, "headers")  # nothing sent yet counts too

    def data_received(self, data: bytes) -> None:
        if not self.held:
            return
        if self.phase == "idle":  # a new request begins: its headers must all arrive in time
            self.phase = "headers"
            self._arm(self.guards.settings.header_timeout, "headers")
            self.fresh = True
        if self.fresh:
            self.fresh = False
            if self.guards.shed_early(data):  # a large body that would be refused anyway: never read it
                self.transport.pause_reading()
                self.transport.write(SHED_RESPONSE)
                self.transport.close()
                return
        self.inner.data_received(data)

    def request_started(self) -> None:
        self.phase = "busy"
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def request_done(self) -> None:
        self.phase = "idle"
        self.served, self.turn = True, self.guards.next_turn()
        if self.held and self.transport is not None and not self.transport.is_closing():
            self._arm(self.guards.settings.idle_timeout, "idle")

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.held else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.held:
            self.held = False
            self.guards.release(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.held:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.held:
            self.inner.resume_writing()


class Guards:
    """The open connections: at most ``max_connections``, each found again from its transport. At the cap a new
    connection evicts the one that has held its place longest without being answered (see :meth:`victim`)."""

    def __init__(self, settings: WebhookSettings, factory: Any, large_busy: Any = lambda: False,
                 metrics: OperatorMetrics | None = None):
        self.settings, self.factory, self.large_busy = settings, factory, large_busy
        self.metrics = metrics or OperatorMetrics()
        self.open: dict[Any, ConnectionGuard] = {}
        self.closed_since_trim = 0
        self.trim = release_free_memory
        self.turns = 0

    def shed_early(self, first: bytes) -> bool:
        """Whether a request whose first bytes are ``first`` announces a large body while a large review is
        being judged: it is answered 503 before aiohttp (or TLS) reads the body."""
        if not self.large_busy():
            return False
        end = first.find(b"\r\n\r\n")
        found = _CONTENT_LENGTH.search(first, 0, end if end >= 0 else min(len(first), 8192))
        if found is None or int(found.group(1)) <= self.settings.large_body:
            return False
        self.metrics.admission_shed.inc()
        return True

    def __call__(self) -> ConnectionGuard:
        return ConnectionGuard(self, self.factory())

    def next_turn(self) -> int:
        self.turns += 1
        return self.turns

    def admit(self, guard: ConnectionGuard) -> bool:
        """Whether ``guard``'s connection may stay: below the cap always; at the cap only in the place of a
        :meth:`victim`, which is closed (``reason="evicted"``)."""
        if len(self.open) >= self.settings.max_connections:
            victim = self.victim()
            if victim is None:
                return False
            self.open.pop(victim.transport, None)
            victim._expire("evicted")
        self.open[guard.transport] = guard
        self.metrics.webhook_connections.set(len(self.open))
        return True

    def victim(self) -> ConnectionGuard | None:
        """The connection a new one replaces at the cap, never one being answered: first the oldest that was
        never answered (an idle or slow client holding a place it has not used: the API server sends its review
        within milliseconds of connecting), else the kept-alive one answered longest ago. None when every
        connection is being answered. A scan of the open connections, only at the cap."""
        oldest_served = None
        for guard in self.open.values():  # in the order they were admitted
            if guard.phase == "busy":
                continue
            if not guard.served:
                return guard
            if oldest_served is None or guard.turn < oldest_served.turn:
                oldest_served = guard
        return oldest_served

    def release(self, guard: ConnectionGuard) -> None:
        self.open.pop(guard.transport, None)
        self.metrics.webhook_connections.set(len(self.open))
        self.closed_since_trim += 1
        if self.closed_since_trim >= TRIM_AFTER_CLOSED and len(self.open) <= self.settings.max_connections // 8:
            # Many connections came and went (each holds ~300 KB of TLS and parser buffers): hand the freed
            # heap back to the OS once the crowd has left, instead of keeping the peak resident.
            self.closed_since_trim = 0
            asyncio.get_running_loop().call_soon(self.trim)

    def of(self, transport: Any) -> ConnectionGuard | None:
        return self.open.get(transport)

    def close_all(self) -> None:
        for guard in list(self.open.values()):
            guard.transport.abort()


class CertReloader:
    """Serves the certificate and key as a pair, and rotates them without a window of failed handshakes.

    Every check reads both files; when their content (not only their modification time) changed, the
    bytes read are loaded together into a new SSLContext, which refuses a key that does not match the
    certificate. Only a pair that loads replaces the current one; a half-written rotation (a new
    certificate beside the old key) leaves the current pair serving, and is tried again next check.
    The listener's context hands every handshake the current pair (its SNI callback, which OpenSSL
    calls for every ClientHello, with or without a server name)."""

    def __init__(self, cert: str, key: str):
        self.cert, self.key = cert, key
        cert_pem, key_pem = self._read()
        self.current = self._load(cert_pem, key_pem)
        self.digest = self._digest(cert_pem, key_pem)
        self.refused: bytes | None = None  # the digest of the last pair refused, so it is logged once
        self.context = self.current  # the listener's; the callback moves each handshake to the current pair
        self.context.sni_callback = self._pick

    def _pick(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        if ssl_object.context is not self.current:
            ssl_object.context = self.current

    def _read(self) -> tuple[bytes, bytes]:
        with open(self.cert, "rb") as c, open(self.key, "rb") as k:
            return c.read(MAX_PEM_BYTES + 1), k.read(MAX_PEM_BYTES + 1)

    @staticmethod
    def _digest(cert_pem: bytes, key_pem: bytes) -> bytes:
        return hashlib.sha256(len(cert_pem).to_bytes(8, "big") + cert_pem + key_pem).digest()

    @staticmethod
    def _load(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
        """A new context holding exactly these bytes (written to a private folder, as OpenSSL reads files)."""
        if len(cert_pem) > MAX_PEM_BYTES or len(key_pem) > MAX_PEM_BYTES:
            raise ssl.SSLError(f"a certificate or key file is above {MAX_PEM_BYTES} bytes")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory(prefix="guywire-tls-") as folder:
            cert_path, key_path = os.path.join(folder, "tls.crt"), os.path.join(folder, "tls.key")
            for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            context.load_cert_chain(cert_path, key_path)  # raises when the key does not match the certificate
        return context

    def check(self) -> bool:
        """Load the files again if their content changed; True when a new pair now serves."""
        try:
            cert_pem, key_pem = self._read()
        except OSError as exc:
            log.warning("Cannot read the webhook certificate (%s); keeping the current one.", exc)
            return False
        digest = self._digest(cert_pem, key_pem)
        if digest == self.digest:
            return False
        try:
            fresh = self._load(cert_pem, key_pem)
        except (OSError, ssl.SSLError, ValueError) as exc:
            if digest != self.refused:
                self.refused = digest
                log.warning("The webhook certificate and key in %s and %s do not load as a pair (%s); keeping "
                            "the current pair until they do.", self.cert, self.key, exc)
            return False
        self.current, self.digest, self.refused = fresh, digest, None
        log.info("Reloaded the webhook certificate from %s.", self.cert)
        return True


class WebhookServer:
    def __init__(self, admission_factory: Any, settings: WebhookSettings, engine_lock: asyncio.Lock | None = None,
                 metrics: OperatorMetrics | None = None):
        """``engine_lock``: held by whoever changes the engine (the operator's watch handlers and loops); a large
        review's child is forked while the webhook holds it, so it sees the engine between two changes.
        ``metrics``: the operator's (through kopf's memo); a webhook on its own counts into its own."""
        self.metrics = metrics or OperatorMetrics()
        self.admission_factory = admission_factory  # () -> Admission, so it sees the current engine
        self.settings = settings
        self.runner: web.AppRunner | None = None
        self.reloader: CertReloader | None = None
        self.task: asyncio.Task | None = None
        self.port: int | None = None
        self.guards: Guards | None = None
        self.large_in_flight = False
        self.timeout_seen: str | None = None  # the API server's last ?timeout=, logged when it changes
        self.engine_lock = engine_lock if engine_lock is not None else asyncio.Lock()
        self.server: asyncio.AbstractServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        guard = self.guards.of(request.transport) if self.guards is not None else None
        if guard is not None:
            guard.request_started()
        try:
            return await self._handle(request)
        finally:
            if guard is not None:
                guard.request_done()

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": f"body of {request.content_length} bytes is above {MAX_BODY}."},
                                     status=413)
        large = request.content_length is not None and request.content_length > self.settings.large_body
        if large:  # the slot is taken before the body is read: a second large body is never read at all
            if self.large_in_flight:
                return self._shed("another large review is being judged")
            self.large_in_flight = True
        try:
            return await self._read_and_decide(request, started, large, self.large_budget(request))
        finally:
            if large:
                self.large_in_flight = False

    def large_budget(self, request: web.Request) -> float:
        """How long a large review may take, the wait for the engine lock included: ``large_timeout``, or less when
        the API server waits less. It says how long with every call (``?timeout=3s``: the webhook's
        timeoutSeconds, rounded up to a second); an answer later than that is thrown away, so the work stops in
        time for the answer to travel back. A value that is not a duration is ignored."""
        budget = self.settings.large_timeout
        given = request.query.get("timeout")
        if given:
            try:
                budget = min(budget, parse_duration(given) - ANSWER_MARGIN_S)
            except ValueError:
                pass
        budget = max(budget, 0.0)
        if given != self.timeout_seen:  # said once, and again when it changes
            self.timeout_seen = given
            log.info("The API server waits %s for an answer (?timeout=%s): a large review gets %g s.",
                     given or "as long as it is configured to", given or "", budget)
        return budget

    async def _read_and_decide(self, request: web.Request, started: float, reserved: bool,
                               budget: float) -> web.Response:
        try:
            raw = await asyncio.wait_for(request.read(), self.settings.body_timeout)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"body above {MAX_BODY} bytes."}, status=413)
        except asyncio.TimeoutError:
            self.metrics.webhook_connections_closed.labels("body").inc()
            resp = web.json_response({"error": f"the body did not arrive within {self.settings.body_timeout:g} s."},
                                     status=408)
            resp.force_close()
            return resp
        if len(raw) > self.settings.large_body:
            if not reserved:  # no Content-Length (chunked): found large only now
                if self.large_in_flight:
                    return self._shed("another large review is being judged")
                self.large_in_flight = True
            try:
                try:
                    review_request, decision = await self._decide_large(raw, budget)
                except ChildFailed as exc:  # the reason goes to the log, not to the client
                    log.warning("A large review (%d bytes) was not judged: %s.", len(raw), exc)
                    return self._shed("this large review was not judged: it failed or ran past its time")
            finally:
                if not reserved:
                    self.large_in_flight = False
        else:
            review_request, decision = self._decide(raw)
        if review_request is None:
            return web.json_response({"error": decision}, status=400)
        elapsed = time.perf_counter() - started
        self.metrics.admission_seconds.observe(elapsed)
        if not decision.dry_run:
            for ref in decision.policies or ["none"]:
                self.metrics.admission_requests.labels(decision.outcome, ref).inc()
            if decision.outcome == "error":
                self.metrics.admission_errors.inc()
            for e in decision.errors:  # a rule that raised: allowed for it, counted per rule
                self.metrics.admission_rule_errors.labels(e.rule).inc()
        for e in decision.errors:
            log.warning("Admission: %s", e.render())
        if decision.outcome in ("denied", "warned", "error"):
            log.info("Admission %s for %s %s/%s%s.", decision.outcome, (review_request.get("kind") or {}).get("kind"),
                     review_request.get("namespace"), review_request.get("name"),
                     " (dry run)" if decision.dry_run else "")
        return web.json_response(decision.review())

    async def _decide_large(self, raw: bytes, budget: float) -> tuple[dict | None, Any]:
        """A large review judged in a forked child: forked while the engine lock is held, so between two changes
        of the engine, never inside one; the child reads its copy of the engine as it was then while the loop
        goes on. The wait for the lock (a full audit may hold it) and the child share ``budget`` seconds; past
        it, :class:`ChildFailed` (the child killed). Where no child can be forked, a worker thread judges it
        while the lock is held (no watch event changes the engine under it), with the GIL handed over every
        1 ms; a thread cannot be stopped, so only its wait for the lock is bounded."""
        if budget <= 0:
            raise ChildFailed("the API server's timeout leaves no time to judge it")
        try:
            async with asyncio.timeout(budget) as deadline:
                async with self.engine_lock:
                    child = ForkedCall(self._decide_summary, raw, nice=LARGE_NICE)
                    if not child.forked:
                        deadline.reschedule(None)
                        interval = sys.getswitchinterval()
                        sys.setswitchinterval(SWITCH_INTERVAL_S)
                        try:
                            return await child.result(budget)
                        finally:
                            sys.setswitchinterval(interval)
                return await child.result(budget)  # the deadline above ends it first; result() kills the child
        except TimeoutError:
            raise ChildFailed(f"not judged within {budget:g} s (the engine busy, or the child too slow)") from None

    def _decide_summary(self, raw: bytes) -> tuple[dict | None, Any]:
        """What a child sends back: the Decision, and of the request only what the parent logs."""
        review_request, decision = self._decide(raw)
        if review_request is None:
            return None, decision
        return {k: review_request.get(k) for k in ("kind", "namespace", "name")}, decision

    def _decide(self, raw: bytes) -> tuple[dict | None, Any]:
        """(the request, its Decision), or (None, why the body is not a review)."""
        try:
            review_request = parse_review(raw)
        except BadReview as exc:
            return None, str(exc)
        admission: Admission = self.admission_factory()
        return review_request, admission.decide(review_request)

    def _shed(self, why: str) -> web.Response:
        """Answer 503 at once instead of queueing: the API server applies the webhook's failurePolicy
        (Ignore: allowed) within milliseconds, instead of waiting out its timeout behind this work."""
        self.metrics.admission_shed.inc()
        resp = web.json_response({"error": f"guywire is overloaded ({why}); not evaluated."}, status=503,
                                 headers={"Retry-After": "1"})
        resp.force_close()  # the body was not read
        return resp

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.settings.idle_timeout)
        await self.runner.setup()
        context = None
        if self.settings.insecure:
            log.warning("THE WEBHOOK SERVES PLAIN HTTP (--webhook-insecure): for local testing only; "
                        "the Kubernetes API server will not call it.")
        else:
            if not (self.settings.cert and self.settings.key):
                raise ValueError("--webhook-cert and --webhook-key are required (or --webhook-insecure for tests).")
            self.reloader = CertReloader(self.settings.cert, self.settings.key)
            context = self.reloader.context
            self.task = asyncio.get_running_loop().create_task(self._reload_loop())
        # Served through our own listener (not aiohttp's TCPSite) so that every connection passes the guard.
        self.guards = Guards(self.settings, self.runner.server, lambda: self.large_in_flight, self.metrics)
        self.server = await asyncio.get_running_loop().create_server(
            self.guards, self.settings.host, self.settings.port, ssl=context, reuse_address=True,
            backlog=self.settings.max_connections,
            ssl_handshake_timeout=self.settings.handshake_timeout if context is not None else None)
        sockets = self.server.sockets or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        log.info("Webhook serving on %s://%s:%s.", "http" if context is None else "https", self.settings.host,
                 self.port)

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            if self.reloader:
                self.reloader.check()

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        if self.server is not None:
            self.server.close()
        if self.guards is not None:
            self.guards.close_all()
        if self.runner:
            await self.runner.cleanup()
