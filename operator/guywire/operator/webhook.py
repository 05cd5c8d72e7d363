"""The validating admission webhook server: HTTPS from certificate files, reloaded when they change.

Runs inside the operator's event loop and reads the operator's engine, so decisions
see the same indexes; each decision is synchronous, so no watch event interleaves
with it. Malformed bodies get a 4xx that says what is wrong; the API server's
failurePolicy Ignore means a crash or a timeout here never blocks a deployment.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import metrics
from ..admission import Admission, BadReview, parse_review

log = logging.getLogger("guywire.webhook")
MAX_BODY = 3 * 1024 * 1024


@dataclass
class WebhookSettings:
    host: str = "0.0.0.0"
    port: int = 0
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    reload_interval: float = 10.0


class CertReloader:
    """Keeps one SSLContext and loads the certificate chain again when either file changes."""

    def __init__(self, cert: str, key: str):
        self.cert, self.key = cert, key
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.stamp = self._stamp()
        self.context.load_cert_chain(cert, key)

    def _stamp(self) -> tuple:
        return tuple(os.stat(p).st_mtime_ns for p in (self.cert, self.key))

    def check(self) -> bool:
        try:
            stamp = self._stamp()
            if stamp == self.stamp:
                return False
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("Cannot reload the webhook certificate (%s); keeping the current one.", exc)
            return False
        self.stamp = stamp
        log.info("Reloaded the webhook certificate from %s.", self.cert)
        return True


class WebhookServer:
    def __init__(self, admission_factory: Any, settings: WebhookSettings):
        self.admission_factory = admission_factory  # () -> Admission, so it sees the current engine
        self.settings = settings
        self.runner: web.AppRunner | None = None
        self.reloader: CertReloader | None = None
        self.task: asyncio.Task | None = None
        self.port: int | None = None

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": f"body of {request.content_length} bytes is above {MAX_BODY}."},
                                     status=413)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"body above {MAX_BODY} bytes."}, status=413)
        try:
            review_request = parse_review(raw)
        except BadReview as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        admission: Admission = self.admission_factory()
        decision = admission.decide(review_request)
        elapsed = time.perf_counter() - started
        metrics.ADMISSION_SECONDS.observe(elapsed)
        if not decision.dry_run:
            for ref in decision.policies or ["none"]:
                metrics.ADMISSION_REQUESTS.labels(decision.outcome, ref).inc()
            if decision.outcome == "error":
                metrics.ADMISSION_ERRORS.inc()
            for e in decision.errors:  # a rule that raised: allowed for it, counted per rule
                metrics.ADMISSION_RULE_ERRORS.labels(e.rule).inc()
        for e in decision.errors:
            log.warning("Admission: %s", e.render())
        if decision.outcome in ("denied", "warned", "error"):
            log.info("Admission %s for %s %s/%s%s.", decision.outcome, (review_request.get("kind") or {}).get("kind"),
                     review_request.get("namespace"), review_request.get("name"),
                     " (dry run)" if decision.dry_run else "")
        return web.json_response(decision.review())

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
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
        site = web.TCPSite(self.runner, self.settings.host, self.settings.port, ssl_context=context,
                           reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
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
        if self.runner:
            await self.runner.cleanup()
