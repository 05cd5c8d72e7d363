"""The webhook server over HTTP on loopback when a rule raises: allowed, a warning naming the rule and
its error, and the Prometheus counters that say so (never a denial)."""
from __future__ import annotations

import json

import aiohttp
import pytest

from guywire.engine.admission import Admission
from guywire.operator.webhook import WebhookServer, WebhookSettings
from tests.examples import example
from tests.unit.test_admission import request
from tests.unit.test_evaluation_errors import RULE, VICTIM, break_rule, clean_engine, policy


async def test_a_request_a_rule_could_not_evaluate_is_allowed_warned_and_counted(monkeypatch):
    break_rule(monkeypatch, victims=("search-api-canary",))
    engine = clean_engine(policy("Enforce"))
    engine.evaluate_all()
    server = WebhookServer(lambda: Admission(engine), WebhookSettings(host="127.0.0.1", port=0, insecure=True))
    await server.start()
    rule_errors = server.metrics.sample("guywire_admission_rule_errors_total", rule=RULE)
    requests = server.metrics.sample("guywire_admission_requests_total", outcome="error",
                      policy="ClusterComplexityPolicy/everything")
    try:
        body = example("Deployment", VICTIM)
        body["metadata"]["name"] = "search-api-canary"
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request(body)}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{server.port}/validate", data=json.dumps(review),
                              headers={"Content-Type": "application/json"}) as r:
                assert r.status == 200
                answer = (await r.json())["response"]
    finally:
        await server.stop()
    assert answer["allowed"] is True and "status" not in answer
    (warning,) = answer["warnings"]
    assert f"rule {RULE} mutable-image" in warning and "KeyError" in warning and "boom on" in warning
    assert server.metrics.sample("guywire_admission_rule_errors_total", rule=RULE) == rule_errors + 1
    assert server.metrics.sample("guywire_admission_requests_total", outcome="error",
                  policy="ClusterComplexityPolicy/everything") == requests + 1
