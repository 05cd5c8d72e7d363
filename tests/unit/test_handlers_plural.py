"""Each watched kind's event handler tells the state its own plural when kopf lists it: the re-listing sweep
lists that plural to forget what was deleted while a watch was broken."""
from __future__ import annotations

import asyncio

from guywire.operator.handlers import build_registry


class ListedState:
    def __init__(self):
        self.engine_lock = asyncio.Lock()
        self.plurals: list[str] = []

    def observe(self, body: dict) -> None:
        pass

    def listed(self, kind, api_version, plural) -> None:
        self.plurals.append(plural)


def test_every_handler_reports_its_own_plural():
    handlers = build_registry()._watching.get_all_handlers()
    assert len({h.selector.plural for h in handlers}) > 1
    for h in handlers:
        state = ListedState()
        body = {"kind": "Anything", "apiVersion": "v1", "metadata": {"name": "x"}}
        asyncio.run(h.fn(type=None, body=body, memo={"state": state}))
        assert state.plurals == [h.selector.plural], h.id
