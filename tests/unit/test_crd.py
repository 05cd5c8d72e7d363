"""crds/ is generated from the policy models; the CRDs are valid, structural, and refuse what the models refuse.

No API server here, so each part of what one does with a custom resource is played by a library:
kubernetes-validate checks the CRDs against the Kubernetes API, jsonschema applies the openAPIV3Schema
(with kubectl's default strict field validation, which refuses unknown fields), cel-python runs the
x-kubernetes-validations rules, and a few lines below apply the schema's defaults as the API server does.
"""
from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor

from guywire.cli import main
from guywire.kube.crd import CLUSTER, KINDS, NAMESPACED, crd, crd_files, crds, crds_yaml, write_crds
from guywire.model.policy import PolicyError, PolicySpec, parse_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "policies").glob("*.yaml"))
VERSIONS = ["1.30", major_minor(latest_version())]
REGENERATE = "run `guywire crd --output-dir crds` and commit the result"


def schema_of(kind) -> dict:
    return crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def kind_named(name: str):
    return next(k for k in KINDS if k.kind == name)


def nodes(schema: dict, path: str = ""):
    """Every schema node below and including ``schema``, with where it is."""
    yield path or "<root>", schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")


# -- what the API server does with an object, played offline --------------------------------------------------

def strict(schema: dict) -> dict:
    """The schema with unknown fields refused, as kubectl's default --validate=strict has the server do."""
    schema = copy.deepcopy(schema)
    for _, node in nodes(schema):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
    return schema


def schema_errors(obj: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft4Validator(strict(schema))  # draft 4: OpenAPI v3.0's boolean exclusiveMinimum
    return sorted(f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj))


def defaulted(obj, schema: dict):
    """Apply defaults as the API server does: a missing field gets its default, then defaults inside it apply."""
    obj = copy.deepcopy(obj)
    if isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
        for name, value in obj.items():
            sub = schema.get("properties", {}).get(name) or (schema.get("additionalProperties") or None)
            if isinstance(sub, dict):
                obj[name] = defaulted(value, sub)
    elif isinstance(obj, list) and "items" in schema:
        obj = [defaulted(item, schema["items"]) for item in obj]
    return obj


_CEL = celpy.Environment()


def cel_errors(obj, schema: dict, path: str = "") -> list[str]:
    """Run every x-kubernetes-validations rule on the node it sits on; the messages of those that fail."""
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = _CEL.program(_CEL.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(obj)})  # an evaluation error comes back as a value
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            errors.append(f"{path}{rule.get('fieldPath', '')}: {rule['message']}")
    if isinstance(obj, dict):
        for name, value in obj.items():
            sub = schema.get("properties", {}).get(name) or (schema.get("additionalProperties") or None)
            if isinstance(sub, dict):
                errors += cel_errors(value, sub, f"{path}.{name}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            errors += cel_errors(item, schema["items"], f"{path}[{i}]")
    return errors


def admission_errors(obj: dict) -> list[str]:
    """What the API server would refuse in ``obj``: its schema (strict fields), then its CEL rules on the defaults."""
    schema = schema_of(kind_named(obj["kind"]))
    errors = schema_errors(obj, schema)
    return errors or cel_errors(defaulted(obj, schema), schema)


# -- (a) the committed copy is what the code generates --------------------------------------------------------

def test_committed_crds_match_the_models():
    committed = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    generated = crd_files()
    stale = sorted(name for name in committed.keys() | generated.keys() if committed.get(name) != generated.get(name))
    assert not stale, f"crds/ differs from the models in {', '.join(stale)}: {REGENERATE}."


def test_crd_command_prints_what_it_writes(tmp_path, capsys):
    assert main(["crd"]) == 0
    printed = capsys.readouterr().out
    assert printed == crds_yaml()
    assert printed.startswith("# Generated by `guywire crd`; do not edit.\n")
    assert [d for d in yaml.safe_load_all(printed)] == crds()

    assert main(["crd", "--output-dir", str(tmp_path / "out")]) == 0
    assert {p.name: p.read_text() for p in (tmp_path / "out").iterdir()} == crd_files()
    assert [p.name for p in write_crds(tmp_path / "again")] == list(crd_files())


def test_generation_is_deterministic():
    assert crds_yaml() == crds_yaml()
    assert "&id" not in crds_yaml(), "repeated sub-schemas are written out, not as YAML anchors"


# -- (b) the CRDs are valid CustomResourceDefinitions ---------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crd_validates_against_kubernetes(kind, version):
    kubernetes_validate.validate(crd(kind), version, strict=True)


def _json_schema_props_validator(version: str) -> jsonschema.protocols.Validator:
    defs_file = (resources.files("kubernetes_validate") / "kubernetes-json-schema"
                 / f"v{version}.0-local-strict" / "_definitions.json")
    defs = json.loads(defs_file.read_text())["$defs"]
    return jsonschema.Draft202012Validator(
        {"$defs": defs, "$ref": "#/$defs/io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps"})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_schema_node_is_valid_json_schema_props(kind, version):
    # kubernetes-validate stops at items and additionalProperties (typed as "schema or bool" upstream);
    # check each node on its own so a typo deep in the tree is caught too.
    validator = _json_schema_props_validator(version)
    for where, node in nodes(schema_of(kind)):
        errors = [e.message for e in validator.iter_errors(node)]
        assert not errors, f"{kind.kind} {where}: {errors}"


# -- (c) the schema is structural -----------------------------------------------------------------------------

_STRUCTURAL_KEYS = {
    "description", "type", "format", "enum", "pattern", "minLength", "maxLength", "minimum", "exclusiveMinimum",
    "maximum", "exclusiveMaximum", "minItems", "maxItems", "minProperties", "maxProperties", "default", "required",
    "properties", "additionalProperties", "items", "x-kubernetes-validations", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind):
    root = schema_of(kind)
    assert root["properties"]["metadata"] == {"type": "object"}, "metadata may only be typed as an object"
    for where, node in nodes(root):
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, f"{where}: no type"
        assert set(node) <= _STRUCTURAL_KEYS, f"{where}: {set(node) - _STRUCTURAL_KEYS} is not structural"
        assert node.get("additionalProperties") is not False, f"{where}: additionalProperties: false is not allowed"
        assert not ("properties" in node and "additionalProperties" in node), f"{where}: properties and a map"
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), f"{where}: an array needs one items schema"
        for name in node.get("required", []):
            assert name in node["properties"], f"{where}: requires unknown {name}"
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"]["required"], f"{where}: list-map key {key} must be required"
    text = json.dumps(root)
    for word in ('"$ref"', '"anyOf"', '"oneOf"', '"allOf"', '"not"', '"nullable"', '"title"'):
        assert word not in text, f"{word} left in the {kind.kind} schema"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_defaults_are_valid_and_pruned(kind):
    for where, node in nodes(schema_of(kind)):
        if "default" in node:
            full = defaulted(node["default"], node)
            assert not schema_errors(full, node), f"{where}: default {node['default']!r} breaks its own schema"


def _without_empty(value):
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items() if v not in (None, [], {})}
    return value


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_defaults_are_the_model_defaults(kind):
    spec = defaulted({}, schema_of(kind))["spec"]  # a policy without a spec
    expected = _without_empty(PolicySpec().model_dump(mode="json", by_alias=True))
    assert spec == expected
    assert PolicySpec.model_validate(spec) == PolicySpec()


# -- (d) the example policies are accepted by both --------------------------------------------------------------

def _examples():
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}")


def test_there_are_example_policies_of_both_kinds():
    kinds = {p.values[0]["kind"] for p in _examples()}
    assert kinds == {NAMESPACED.kind, CLUSTER.kind}


@pytest.mark.parametrize("policy", list(_examples()))
def test_example_policy_is_accepted(policy):
    assert admission_errors(policy) == []
    parsed = parse_policy(policy)
    schema = schema_of(kind_named(policy["kind"]))
    assert parse_policy(defaulted(policy, schema)).spec == parsed.spec, "the CRD's defaults change the meaning"


# -- (e) a bad policy is refused by both, naming the field -----------------------------------------------------

def _policy(spec: dict, kind: str = CLUSTER.kind) -> dict:
    meta = {"name": "bad"} if kind == CLUSTER.kind else {"name": "bad", "namespace": "ml"}
    return {"apiVersion": "guywire.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


BAD = [
    pytest.param({"rules": {"retries": {"maxAttempt": 3}}}, "maxAttempt", id="unknown-field"),
    pytest.param({"rules": {"retries": {"maxAttempts": "three"}}}, "rules.retries.maxAttempts", id="attempts-type"),
    pytest.param({"rules": {"retries": {"maxAttempts": 0}}}, "rules.retries.maxAttempts", id="attempts-zero"),
    pytest.param({"rules": {"gpu": {"reportMaxAge": "5 minutes"}}}, "rules.gpu.reportMaxAge", id="duration"),
    pytest.param({"enforcement": "Block"}, "enforcement", id="enforcement"),
    pytest.param({"overrides": [{"rule": "OBS-2", "severity": "Low"}]}, "overrides.0.rule", id="rule-id"),
    pytest.param({"overrides": [{"rule": "GW-OBS-002", "severity": "Urgent"}]}, "overrides.0.severity",
                 id="severity"),
    pytest.param({"match": {"selector": {"matchExpressions": [{"key": "team", "operator": "Like"}]}}},
                 "match.selector.matchExpressions.0.operator", id="selector-operator"),
]


@pytest.mark.parametrize(("spec", "field"), BAD)
def test_bad_policy_is_refused_by_the_schema(spec, field):
    errors = admission_errors(_policy(spec))
    assert errors and any(field in e for e in errors), errors


@pytest.mark.parametrize(("spec", "field"), BAD)
def test_bad_policy_is_refused_by_the_model(spec, field):
    with pytest.raises(PolicyError) as err:
        parse_policy(_policy(spec))
    assert str(err.value).startswith("spec.") and field in str(err.value), str(err.value)


MODEL_GAP = ()  # the model now refuses everything the CEL rules refuse

CEL_BAD = [
    pytest.param(_policy({"overrides": [{"rule": "GW-OBS-002"}]}), ".spec.overrides[0]",
                 "an override sets a severity or disables the rule", id="override-does-nothing"),
    pytest.param(_policy({"overrides": [{"rule": "GW-OBS-002", "disabled": False}]}), ".spec.overrides[0]",
                 "an override sets a severity or disables the rule", id="override-disabled-false"),
    pytest.param(_policy({"match": {"selector": {"matchExpressions": [{"key": "team", "operator": "In"}]}}}),
                 ".spec.match.selector.matchExpressions[0].values", "at least one value", id="in-without-values"),
    pytest.param(_policy({"exclude": {"selector": {"matchExpressions": [
                     {"key": "team", "operator": "Exists", "values": ["ml"]}]}}}),
                 ".spec.exclude.selector.matchExpressions[0].values", "must be empty", id="exists-with-values"),
    pytest.param(_policy({"match": {"namespaceSelector": {"matchLabels": {"team": "ml"}}}}, NAMESPACED.kind),
                 ".spec.match.namespaceSelector", "not allowed: a ComplexityPolicy applies to its own namespace",
                 id="namespaced-namespace-selector"),
]


@pytest.mark.parametrize(("policy", "where", "message"), CEL_BAD)
def test_cel_rule_refuses(policy, where, message):
    assert schema_errors(policy, schema_of(kind_named(policy["kind"]))) == []
    errors = admission_errors(policy)
    assert errors and errors[0].startswith(f"{where}: ") and message in errors[0], errors


@pytest.mark.parametrize(("policy", "where", "message"),
                         [pytest.param(*p.values, id=p.id, marks=MODEL_GAP) for p in CEL_BAD])
def test_model_refuses_what_cel_refuses(policy, where, message):
    # Strict xfail: when the model learns the rule, this passes, fails the run, and the mark should go.
    with pytest.raises(PolicyError):
        parse_policy(policy)


@pytest.mark.parametrize("policy", [
    pytest.param(_policy({"overrides": [{"rule": "GW-OBS-002", "severity": "Low"},
                                        {"rule": "GW-CPX-*", "disabled": True}]}), id="overrides"),
    pytest.param(_policy({"match": {"selector": {"matchExpressions": [
        {"key": "a", "operator": "In", "values": ["x"]}, {"key": "b", "operator": "NotIn", "values": ["y"]},
        {"key": "c", "operator": "Exists"}, {"key": "d", "operator": "DoesNotExist", "values": []}]}}}),
        id="every-operator"),
    pytest.param(_policy({"match": {"namespaceSelector": {"matchLabels": {"team": "ml"}}}}), id="cluster-ns-selector"),
    pytest.param(_policy({}, NAMESPACED.kind), id="empty-namespaced"),
])
def test_cel_rules_accept(policy):
    assert admission_errors(policy) == []
    parse_policy(policy)


# -- (f) names, columns, scope ----------------------------------------------------------------------------------

def test_names_scope_and_columns():
    by_kind = {c["spec"]["names"]["kind"]: c for c in crds()}
    assert list(by_kind) == ["ComplexityPolicy", "ClusterComplexityPolicy"]
    expected = {"ComplexityPolicy": ("complexitypolicies", "complexitypolicy", "cxp", "Namespaced"),
                "ClusterComplexityPolicy": ("clustercomplexitypolicies", "clustercomplexitypolicy", "ccxp", "Cluster")}
    for kind, (plural, singular, short, scope) in expected.items():
        obj = by_kind[kind]
        names = obj["spec"]["names"]
        assert obj["metadata"]["name"] == f"{plural}.guywire.dev"
        assert (names["plural"], names["singular"], names["shortNames"], names["categories"]) == \
            (plural, singular, [short], ["guywire"])
        assert obj["spec"]["scope"] == scope and obj["spec"]["group"] == "guywire.dev"
        [version] = obj["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}
        columns = [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
        assert columns == [
            ("Enforcement", "string", ".spec.enforcement"),
            ("Matched", "integer", ".status.matched"),
            ("Violating", "integer", ".status.violating"),
            ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]


def test_printer_columns_point_at_schema_fields():
    for kind in KINDS:
        schema = schema_of(kind)
        assert schema["properties"]["spec"]["properties"]["enforcement"]["type"] == "string"
        status = schema["properties"]["status"]["properties"]
        assert status["matched"]["type"] == status["violating"]["type"] == "integer"
        assert status["conditions"]["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
