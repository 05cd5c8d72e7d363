"""The webhook server over real HTTPS on loopback: answers, refusals, limits, certificate reload."""
from __future__ import annotations

import asyncio
import json
import ssl

import aiohttp
import pytest

from guywire.engine.admission import Admission
from guywire.operator.webhook import WebhookServer, WebhookSettings
from tests.certs import write_self_signed
from tests.unit.test_admission import example_engine, example_object, request

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = write_self_signed(d, "first.example")
    return d, cert, key


@pytest.fixture(scope="module")
async def server(tls):
    _, cert, key = tls
    engine = example_engine()
    srv = WebhookServer(lambda: Admission(engine), WebhookSettings(host="127.0.0.1", port=0, cert=str(cert),
                                                                   key=str(key), reload_interval=0.1))
    await srv.start()
    yield srv
    await srv.stop()


def client_ssl(cert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    return ctx


def review(req: dict) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}).encode()


async def post(server, tls, body: bytes, path: str = "/validate/workloads"):
    _, cert, _ = tls
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with aiohttp.ClientSession() as s:
        async with s.post(f"https://127.0.0.1:{server.port}{path}", data=body, ssl=ctx,
                          headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json()


async def test_a_denied_request_over_https_carries_the_uid_and_the_message(server, tls):
    obj = example_object("Deployment", "llm-server")
    obj["metadata"]["name"] = "llm-server-2"
    status, body = await post(server, tls, review(request(obj)))
    assert status == 200
    assert body["kind"] == "AdmissionReview" and body["apiVersion"] == "admission.k8s.io/v1"
    assert body["response"]["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert body["response"]["allowed"] is False
    assert "[GW-OBS-005 incomplete-gpu-resources]" in body["response"]["status"]["message"]


async def test_a_warned_request_is_allowed_with_warnings(server, tls):
    obj = example_object("Deployment", "retriever")
    obj["metadata"]["name"] = "retriever-2"
    status, body = await post(server, tls, review(request(obj)))
    assert status == 200 and body["response"]["allowed"] is True
    assert any(w.startswith("[GW-") for w in body["response"]["warnings"])


@pytest.mark.parametrize("body, code", [
    (b"{not json", 400),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}).encode(), 400),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1",
                 "request": {"uid": "x"}}).encode(), 400),
])
async def test_malformed_bodies_get_a_clear_4xx(server, tls, body, code):
    status, answer = await post(server, tls, body)
    assert status == code and answer["error"]


async def test_a_huge_body_is_refused_without_stalling_the_server(server, tls):
    huge = review({"uid": "u", "operation": "CREATE", "object": {"kind": "Deployment", "pad": "x" * (4 << 20)}})
    status, answer = await post(server, tls, huge)
    assert status == 413
    obj = example_object("Deployment", "retriever")
    status, _ = await post(server, tls, review(request(obj, "UPDATE", old=obj)))
    assert status == 200


async def test_garbage_inside_a_valid_review_is_allowed_with_a_warning(server, tls):
    req = request({"kind": "Deployment", "metadata": {"name": "x", "namespace": "ml"}, "spec": []})
    status, body = await post(server, tls, review(req))
    assert status == 200 and body["response"]["allowed"] is True
    assert "could not" in body["response"]["warnings"][0]


async def test_concurrent_requests_are_all_answered(server, tls):
    obj = example_object("Deployment", "gateway")
    results = await asyncio.gather(*(post(server, tls, review(request(obj, "UPDATE", old=obj))) for _ in range(50)))
    assert all(status == 200 for status, _ in results)


async def test_the_certificate_is_reloaded_when_its_files_change(server, tls):
    d, cert, key = tls

    async def served_name() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=_insecure(),
                                                       server_hostname="x")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        from cryptography import x509
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()

    assert await served_name() == "CN=first.example"
    write_self_signed(d, "second.example")
    for _ in range(50):
        await asyncio.sleep(0.1)
        if await served_name() == "CN=second.example":
            break
    assert await served_name() == "CN=second.example"


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
