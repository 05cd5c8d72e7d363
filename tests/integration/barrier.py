"""A positive signal that the operator has caught up, for tests that then assert something did NOT happen.

``caught_up(api)`` creates a new Deployment in the namespace ``barrier`` (judged only by its own Warn
policy, so nothing the other tests count changes) and waits until the operator has annotated it and
posted a Warning Event for each rule it violates. By then the operator has

- handled the Deployment watch stream up to that creation (so every earlier change, including the
  watch events of its own earlier writes),
- finished a writer pass after it (a pass writes every workload pending at its start), and
- posted every Event queued before (the Event queue is first in, first out).

So whatever it was going to write or post because of anything that happened before the call has been
written or posted. Everything the barrier itself causes lies under ``/namespaces/barrier/``
(``BARRIER_PATH``): filter that out of recorded requests.
"""
from __future__ import annotations

import itertools

NAMESPACE = "barrier"
BARRIER_PATH = f"/namespaces/{NAMESPACE}/"
TIMEOUT = 20
_serial = itertools.count(1)


def _ensure_namespace(api) -> None:
    if not api.get("namespaces", NAMESPACE):
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    if not api.get("complexitypolicies.guywire.dev", NAMESPACE, NAMESPACE):
        api.create({"apiVersion": "guywire.dev/v1alpha1", "kind": "ComplexityPolicy",
                    "metadata": {"name": NAMESPACE, "namespace": NAMESPACE}, "spec": {"enforcement": "Warn"}})


def caught_up(api, timeout: float = TIMEOUT) -> str:
    """Wait until the operator has caught up with everything before this call; returns the sentinel's name."""
    _ensure_namespace(api)
    name = f"sentinel-{next(_serial)}"
    api.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "example/sentinel:latest"}]}}}})
    violations = api.wait_for(lambda: ((api.get("deployments.apps", name, NAMESPACE) or {}).get("metadata", {})
                                       .get("annotations", {}).get("guywire.dev/violations")),
                              timeout=timeout, message=f"the operator did not annotate {NAMESPACE}/{name}.")
    rules = set(violations.split(","))
    api.wait_for(lambda: {e["reason"] for e in api.events_for("Deployment", NAMESPACE, name)
                          if e.get("type") == "Warning"} == rules,
                 timeout=timeout, message=f"the operator did not post a Warning Event per rule on {NAMESPACE}/{name}.")
    return name


def is_sentinel(name: str) -> bool:
    return name.startswith("sentinel-")
