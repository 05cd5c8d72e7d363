"""Two inputs that define the same object: the later is the one in the graph, both are judged, the user is told;
and --cluster-per, which says what one cluster is."""
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


def _obs007_sources(data: dict) -> list[str]:
    return sorted(f["source"]["file"].rsplit("/", 1)[-1] for f in data["findings"] if f["rule"] == "GW-OBS-007")


def test_a_redefined_object_is_warned_about_and_both_definitions_are_judged(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(DEPLOY.format(tag="latest"))
    (tmp_path / "b.yaml").write_text(DEPLOY.format(tag="v0.6.3"))
    rc = main(["check", str(tmp_path), "--format", "json"])
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert rc == 1  # a finding, not an input error
    assert "Deployment ml/vllm is defined again (first at" in err and "a.yaml:1" in err
    assert "this definition is the one in the graph, and both are judged on their own" in err
    assert "--cluster-per dir" in err
    assert [e["level"] for e in data["errors"]] == ["warning"]
    # a.yaml's :latest was replaced in the graph, and is judged all the same
    assert _obs007_sources(data) == ["a.yaml"]
    assert data["summary"]["workloads"] == 2


def test_three_definitions_are_three_judgements_each_with_its_own_source(tmp_path, capsys):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yaml").write_text(DEPLOY.format(tag="latest"))
    main(["check", str(tmp_path), "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert _obs007_sources(data) == ["a.yaml", "b.yaml", "c.yaml"]


def test_text_output_groups_each_definition_under_its_own_file(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(DEPLOY.format(tag="latest"))
    (tmp_path / "b.yaml").write_text(DEPLOY.format(tag="latest"))
    main(["check", str(tmp_path), "--color", "never"])
    out = capsys.readouterr().out
    assert out.count("Deployment ml/vllm  (") == 2 and "a.yaml:1)" in out and "b.yaml:1)" in out


SERVICE = """apiVersion: v1
kind: Service
metadata: {name: llm-service, namespace: ml}
spec: {selector: {app: llm}, ports: [{port: 80}]}
"""
WORKER = """apiVersion: apps/v1
kind: Deployment
metadata: {name: llm, namespace: ml, labels: {app.kubernetes.io/name: llm}}
spec:
  selector: {matchLabels: {app: llm}}
  template:
    metadata: {labels: {app: llm}}
    spec:
      containers:
      - name: worker
        image: example/worker:1.0
        args: ["--queue", "jobs"]
        resources: {requests: {cpu: "1", memory: 1Gi}, limits: {memory: 1Gi}}
"""


def test_cluster_per_dir_keeps_a_service_of_one_directory_from_selecting_a_workload_of_another(tmp_path, capsys):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "svc.yaml").write_text(SERVICE)
    (tmp_path / "two" / "worker.yaml").write_text(WORKER)
    main(["check", str(tmp_path), "--format", "json"])
    as_one = json.loads(capsys.readouterr().out)
    assert any(f["rule"] == "GW-OBS-001" for f in as_one["findings"])  # the Service of "one" selects it
    main(["check", str(tmp_path), "--format", "json", "--cluster-per", "dir"])
    per_dir = json.loads(capsys.readouterr().out)
    assert not any(f["rule"] == "GW-OBS-001" for f in per_dir["findings"])
    assert per_dir["summary"]["services"] == 1 and per_dir["summary"]["workloads"] == 1


def test_cluster_per_file_gives_no_redefinition_warning_and_judges_both(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(DEPLOY.format(tag="latest"))
    (tmp_path / "b.yaml").write_text(DEPLOY.format(tag="edge-never-matches-latest"))
    main(["check", str(tmp_path), "--format", "json", "--cluster-per", "file"])
    captured = capsys.readouterr()
    assert "defined again" not in captured.err
    assert "a.yaml" in _obs007_sources(json.loads(captured.out))


POLICY = """apiVersion: guywire.dev/v1alpha1
kind: ClusterComplexityPolicy
metadata: {name: no-images-rule}
spec:
  overrides: [{rule: GW-OBS-007, disabled: true}]
"""


def test_a_policy_found_in_a_directory_applies_to_that_directory_only(tmp_path, capsys):
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "deploy.yaml").write_text(DEPLOY.format(tag="latest"))
    (tmp_path / "one" / "policy.yaml").write_text(POLICY)
    main(["check", str(tmp_path), "--format", "json", "--cluster-per", "dir"])
    data = json.loads(capsys.readouterr().out)
    assert [f["source"]["file"].split("/")[-2] for f in data["findings"] if f["rule"] == "GW-OBS-007"] == ["two"]


def test_graph_and_report_give_one_document_per_cluster_and_simulate_finds_the_cluster(tmp_path, capsys):
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
    (tmp_path / "one" / "svc.yaml").write_text(SERVICE)
    (tmp_path / "two" / "worker.yaml").write_text(WORKER)
    assert main(["graph", str(tmp_path), "--format", "json", "--cluster-per", "dir"]) == 0
    graph = json.loads(capsys.readouterr().out)
    assert [c["cluster"].rsplit("/", 1)[-1] for c in graph["clusters"]] == ["one", "two"]
    assert main(["report", str(tmp_path), "--cluster-per", "dir"]) == 0
    assert capsys.readouterr().out.count("# cluster ") == 2
    assert main(["simulate", str(tmp_path), "--cluster-per", "dir", "--target", "llm.ml", "--down"]) == 0
    assert main(["graph", str(tmp_path), "--format", "html", "--cluster-per", "dir"]) == 2
    assert "takes one cluster; --cluster-per made 2" in capsys.readouterr().err


def test_simulate_says_how_many_clusters_holding_the_target_are_not_named(tmp_path, capsys):
    for i in range(7):
        (tmp_path / f"env{i}.yaml").write_text(DEPLOY.format(tag="1.0"))
    assert main(["simulate", str(tmp_path), "--cluster-per", "file", "--target", "vllm", "--down"]) == 2
    err = capsys.readouterr().err
    assert "vllm is in 7 clusters (" in err and "env3.yaml and 3 more); give the files of one of them." in err
    assert main(["graph", str(tmp_path), "--format", "html", "--cluster-per", "file"]) == 2
    err = capsys.readouterr().err
    assert "--cluster-per made 7 (" in err and "env3.yaml and 3 more). Give the files" in err
