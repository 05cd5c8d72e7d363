"""Certificate rotation: a certificate and key are only ever served as a pair. A new certificate beside the
old key (a rotation half written) never reaches a handshake; a change is found by content, not only by
modification time."""
from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from cryptography import x509

from guywire.engine.admission import Admission
from guywire.operator.webhook import WebhookServer, WebhookSettings
from tests.certs import write_self_signed
from tests.integration.test_webhook_server import _insecure
from tests.unit.test_admission import example_engine

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
async def served(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    cert, key = write_self_signed(live, "first.example")
    srv = WebhookServer(lambda: Admission(example_engine()), WebhookSettings(
        host="127.0.0.1", port=0, cert=str(cert), key=str(key), reload_interval=3600))  # checks only when told
    await srv.start()
    yield srv, tmp_path, cert, key
    await srv.stop()


async def served_name(srv) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=_insecure(), server_hostname="x")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def new_pair(tmp_path, name: str):
    folder = tmp_path / name
    folder.mkdir()
    return write_self_signed(folder, f"{name}.example")


async def test_a_new_certificate_beside_the_old_key_never_serves(served):
    srv, tmp_path, cert, key = served
    new_cert, new_key = new_pair(tmp_path, "second")
    shutil.copyfile(new_cert, cert)  # the rotation half written: the key is still the old one
    assert srv.reloader.check() is False
    names = await asyncio.gather(*(served_name(srv) for _ in range(20)))
    assert set(names) == {"CN=first.example"}, "every handshake still gets the old, matching pair"
    shutil.copyfile(new_key, key)  # the rotation completes
    assert srv.reloader.check() is True
    assert await served_name(srv) == "CN=second.example"


async def test_a_change_is_found_by_content_even_with_the_same_modification_times(served):
    srv, tmp_path, cert, key = served
    stamps = [(os.stat(p).st_atime_ns, os.stat(p).st_mtime_ns) for p in (cert, key)]
    new_cert, new_key = new_pair(tmp_path, "third")
    shutil.copyfile(new_cert, cert)
    shutil.copyfile(new_key, key)
    for path, (atime, mtime) in zip((cert, key), stamps):
        os.utime(path, ns=(atime, mtime))
    assert srv.reloader.check() is True
    assert await served_name(srv) == "CN=third.example"


async def test_unchanged_files_are_not_loaded_again(served):
    srv, _, _, _ = served
    before = srv.reloader.current
    assert srv.reloader.check() is False and srv.reloader.current is before
