"""Views keep what the rules read, and leave out what only costs memory."""
import json

from guywire.views.inventory import view_of


def test_kubectl_last_applied_configuration_is_not_kept_in_views():
    obj = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "vllm", "namespace": "ml", "annotations": {
               "guywire.dev/depends-on": "retriever",
               "kubectl.kubernetes.io/last-applied-configuration": json.dumps({"spec": "x" * 10_000})}},
           "spec": {"template": {"metadata": {"labels": {"app": "vllm"}},
                                 "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.6.3"}]}}}}
    view = view_of(obj)
    assert list(view.annotations) == ["guywire.dev/depends-on"]
    assert [d.name for d in view.decl.depends_on] == ["retriever"]
