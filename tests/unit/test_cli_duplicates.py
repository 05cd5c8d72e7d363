"""Two inputs that define the same object: the later replaces the earlier, and the user is told."""
import json

from guywire.cli import main

DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: vllm, namespace: ml, labels: {{app.kubernetes.io/name: vllm}}}}
spec:
  selector: {{matchLabels: {{app: vllm}}}}
  template:
    metadata: {{labels: {{app: vllm}}}}
    spec:
      containers:
      - name: vllm
        image: vllm/vllm-openai:{tag}
        resources: {{requests: {{cpu: "1", memory: 1Gi}}, limits: {{memory: 1Gi}}}}
"""


def test_a_redefined_object_is_reported_as_a_warning_and_the_later_one_is_judged(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(DEPLOY.format(tag="v0.6.3"))
    (tmp_path / "b.yaml").write_text(DEPLOY.format(tag="latest"))
    rc = main(["check", str(tmp_path), "--format", "json"])
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert rc == 1  # a finding, not an input error
    assert "Deployment ml/vllm is defined again (first at" in err and "a.yaml:1" in err
    assert [e["level"] for e in data["errors"]] == ["warning"]
    assert any(f["rule"] == "GW-OBS-007" for f in data["findings"])  # b.yaml's :latest is what was judged
