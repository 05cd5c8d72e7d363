"""
Fixtures for integration tests: a Kubernetes API server on loopback.

Every test module gets its own server (``kube_api``), so objects created by
one test are visible to the next tests of the same module: use unique names
or namespaces per test. Nothing global is set: clients get the address from
``kube_api.url``, ``kube_api.kubeconfig_path`` or ``kube_api.connection_info()``.

kopf logs in through a login handler, never through ``KUBECONFIG``::

    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kube_api.login)
    # or let tests.kubeapi.run_kopf() add it and run the operator in a thread:
    from tests.kubeapi import run_kopf
    with run_kopf(kube_api, registry):
        kube_api.wait_for(lambda: ...)
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kubeapi import KubeApiServer


@pytest.fixture(scope='module')
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    """A test API server shared by the tests of one module, stopped after the module."""
    api = KubeApiServer(bookmark_interval=0.5)
    api.start()
    try:
        api.write_kubeconfig(tmp_path_factory.mktemp('kubeapi') / 'kubeconfig')
        yield api
    finally:
        api.stop()
