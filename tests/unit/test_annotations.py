"""The annotation contract: depends-on, retry, retry.<dep> and exempt parse, and bad values are quoted, never raised."""
import pytest

from guywire.views.annotations import (
    DEPENDS_ON, EXEMPT, EXEMPT_REASON, MAX_DEPENDENCIES, NO_RETRY, RETRY, DependencyRef, RetryPolicy,
    parse_declarations, parse_depends_on, parse_exempt, parse_retry,
)


def one(value: str) -> DependencyRef:
    deps, errors = parse_depends_on(value)
    assert errors == [], [e.render() for e in errors]
    assert len(deps) == 1
    return deps[0]


# ----- depends-on ------------------------------------------------------------------------------


@pytest.mark.parametrize("value, name, namespace, port", [
    ("retriever", "retriever", None, None),
    ("vector-db.data", "vector-db", "data", None),
    ("vector-db.data.svc", "vector-db", "data", None),
    ("vector-db.data.svc.cluster.local", "vector-db", "data", None),
    ("vector-db.data.svc.cluster.local:6333", "vector-db", "data", 6333),
    ("retriever:8080", "retriever", None, 8080),
    ("retriever.ml:1", "retriever", "ml", 1),
    ("retriever.ml:65535", "retriever", "ml", 65535),
    ("  retriever  ", "retriever", None, None),
])
def test_depends_on_in_cluster_forms(value, name, namespace, port):
    dep = one(value)
    assert (dep.name, dep.namespace, dep.port, dep.external) == (name, namespace, port, False)
    assert dep.raw == value.strip()


def test_depends_on_external_hosts():
    dep = one("external:api.openai.com")
    assert (dep.name, dep.external, dep.port) == ("api.openai.com", True, None)
    dep = one("external:api.openai.com:443")
    assert (dep.name, dep.external, dep.port) == ("api.openai.com", True, 443)
    assert dep.label("ml") == "external:api.openai.com"


def test_depends_on_label_and_key_use_the_callers_namespace():
    dep = one("retriever")
    assert dep.key_in("ml") == ("ml", "retriever")
    assert dep.label("ml") == "retriever"
    other = one("vector-db.data")
    assert other.key_in("ml") == ("data", "vector-db")
    assert other.label("ml") == "vector-db.data"
    assert other.label("data") == "vector-db"


def test_depends_on_lists_split_on_commas_whitespace_and_newlines_and_drop_duplicates():
    deps, errors = parse_depends_on("a, b\n  c\tb ,, a.default\n\nexternal:x.io , external:X.io\n")
    assert errors == []
    assert [(d.name, d.namespace, d.external) for d in deps] == [
        ("a", None, False), ("b", None, False), ("c", None, False), ("a", "default", False),
        ("x.io", None, True)]


def test_depends_on_empty_value_is_no_dependency():
    assert parse_depends_on("") == ([], [])
    assert parse_depends_on(" ,\n ") == ([], [])


@pytest.mark.parametrize("bad, fragment", [
    ("retriever:0", "port '0'"),
    ("retriever:65536", "port '65536'"),
    ("retriever:http", "port 'http'"),
    ("retriever:", "port ''"),
    ("a.b.c", "is not a Service or workload name"),
    ("a..b", "is not a Service or workload name"),
    ("bad_name", "is not a valid Kubernetes name"),
    ("-leading", "is not a valid Kubernetes name"),
    ("a.", "is not a valid Kubernetes name"),
    ("x" * 64, "is not a valid Kubernetes name"),
    ("external:", "is not a host name"),
    ("external:-bad.example", "is not a host name"),
    ("external:api.openai.com:99999", "port '99999'"),
])
def test_depends_on_bad_items_are_quoted_in_the_error(bad, fragment):
    deps, errors = parse_depends_on(f"good, {bad}")
    assert [d.name for d in deps] == ["good"], "the readable part is kept"
    assert len(errors) == 1
    err = errors[0]
    assert err.key == DEPENDS_ON
    assert fragment in err.message
    assert f'"{bad}"' in err.message, "the bad item is quoted"
    assert err.render().startswith(f"annotation {DEPENDS_ON}=")


def test_depends_on_not_a_service_suggests_external():
    _, errors = parse_depends_on("api.example.com")
    assert "external:api.example.com" in errors[0].message


def test_depends_on_uppercase_names_are_read_case_insensitively_like_dns():
    # Service and workload names are lowercase DNS labels and DNS is case-insensitive,
    # so "Retriever.ML" is the same dependency as "retriever.ml": it is normalised, not refused.
    dep = one("Retriever.ML")
    assert (dep.name, dep.namespace) == ("retriever", "ml")
    deps, errors = parse_depends_on("retriever, RETRIEVER")
    assert errors == [] and len(deps) == 1


def test_depends_on_10000_items_are_capped_with_a_clear_error():
    value = ",".join(f"svc-{i}" for i in range(10_000))
    deps, errors = parse_depends_on(value)
    assert len(deps) == MAX_DEPENDENCIES
    assert len(errors) == 1
    assert "10000 dependencies" in errors[0].message
    assert f"first {MAX_DEPENDENCIES}" in errors[0].message
    rendered = errors[0].render()
    assert len(rendered) < 400, "a huge value is shortened when quoted"
    assert "…" in rendered


def test_error_quote_escapes_newlines():
    decl = parse_declarations({DEPENDS_ON: "ok\na.b.c"})
    assert [d.name for d in decl.depends_on] == ["ok"]
    rendered = decl.errors[0].render()
    assert '"ok\\na.b.c"' in rendered and "\n" not in rendered


# ----- retry --------------------------------------------------------------------------------------


def test_retry_full_policy():
    pol, errors = parse_retry(RETRY, "attempts=3, perTryTimeout=2s, timeout=7s, backoff=exponential")
    assert errors == []
    assert pol == RetryPolicy(attempts=3, per_try_timeout=2.0, timeout=7.0, backoff="exponential")
    assert pol.retries and pol.has_timeout and pol.has_backoff


def test_retry_separators_and_key_spellings():
    pol, errors = parse_retry(RETRY, "maxAttempts=2; per-try-timeout=500ms\nTIMEOUT=1m30s")
    assert errors == []
    assert pol == RetryPolicy(attempts=2, per_try_timeout=0.5, timeout=90.0)


@pytest.mark.parametrize("value, fragment", [
    ("attempts=-1", "attempts=-1 is out of range"),
    ("attempts=0", "attempts=0 is out of range"),
    ("attempts=1001", "attempts=1001 is out of range"),
    ("attempts=abc", "attempts='abc' is not a whole number"),
    ("attempts=2.5", "attempts='2.5' is not a whole number"),
    ("timeout=abc", "timeout='abc'"),
    ("perTryTimeout=5", "perTryTimeout='5'"),
    ("timeout=0s", "must be longer than zero"),
    ("retries=3", "unknown key 'retries'"),
    ("attempts", '"attempts" is not key=value'),
    ("backoff=sometimes", "backoff='sometimes' is unknown"),
    ("", "is empty"),
    (" , ; ", "is empty"),
])
def test_retry_bad_values_are_named(value, fragment):
    pol, errors = parse_retry(RETRY, value)
    assert pol is None
    assert errors, value
    assert any(fragment in e.message for e in errors), [e.message for e in errors]
    assert all(e.key == RETRY and e.value == value for e in errors)


def test_retry_keeps_what_it_could_read():
    pol, errors = parse_retry(RETRY, "attempts=3, timeout=abc, backoff=exponential")
    assert pol == RetryPolicy(attempts=3, backoff="exponential")
    assert len(errors) == 1 and "timeout='abc'" in errors[0].message


@pytest.mark.parametrize("value, backoff, has_backoff", [
    ("backoff=exponential", "exponential", True),
    ("backoff=Exponential-Jitter", "exponential-jitter", True),
    ("backoff=linear", "linear", True),
    ("backoff=fixed", "fixed", True),
    ("backoff=100ms", "fixed", True),
    ("backoff=none", "none", False),
])
def test_retry_backoff_values(value, backoff, has_backoff):
    pol, errors = parse_retry(RETRY, f"attempts=2, {value}")
    assert errors == []
    assert pol.backoff == backoff
    assert pol.has_backoff is has_backoff


def test_retry_policy_defaults_mean_no_retry():
    assert NO_RETRY.attempts == 1
    assert not NO_RETRY.retries and not NO_RETRY.has_timeout and not NO_RETRY.has_backoff
    assert NO_RETRY.worst_case() is None


@pytest.mark.parametrize("policy, worst", [
    (RetryPolicy(attempts=3, per_try_timeout=2.0), 6.0),
    (RetryPolicy(attempts=3, per_try_timeout=2.0, timeout=5.0), 5.0),  # capped by the overall timeout
    (RetryPolicy(attempts=3, per_try_timeout=2.0, timeout=60.0), 6.0),
    (RetryPolicy(attempts=3, timeout=7.0), 7.0),
    (RetryPolicy(attempts=1, per_try_timeout=0.5), 0.5),
    (RetryPolicy(attempts=4), None),
])
def test_retry_worst_case(policy, worst):
    assert policy.worst_case() == worst


# ----- declarations ------------------------------------------------------------------------------------


def test_retry_override_per_dependency():
    decl = parse_declarations({
        DEPENDS_ON: "retriever, vector-db.data, external:api.openai.com, llm.ml.svc.cluster.local:8000",
        RETRY: "attempts=3, perTryTimeout=2s, backoff=exponential",
        RETRY + ".vector-db": "attempts=1, timeout=500ms",
        RETRY + ".api.openai.com": "attempts=5, perTryTimeout=30s, backoff=exponential",
        RETRY + ".llm.ml": "attempts=2, perTryTimeout=60s, backoff=exponential",
    })
    assert decl.errors == []
    by_name = {d.name: d for d in decl.depends_on}
    assert decl.retry_policy(by_name["retriever"], "ml").attempts == 3
    assert decl.retry_policy(by_name["vector-db"], "ml") == RetryPolicy(attempts=1, timeout=0.5)
    assert decl.retry_policy(by_name["api.openai.com"], "ml").attempts == 5
    assert decl.retry_policy(by_name["llm"], "ml").attempts == 2


def test_retry_override_by_raw_name_and_by_qualified_name():
    decl = parse_declarations({
        DEPENDS_ON: "embedder, reranker.ml",
        RETRY + ".embedder.ml": "attempts=2, timeout=1s",
        RETRY + ".reranker.ml": "attempts=4, timeout=1s",
    })
    embedder, reranker = decl.depends_on
    assert decl.retry_policy(embedder, "ml").attempts == 2  # name.<caller's namespace>
    assert decl.retry_policy(reranker, "ml").attempts == 4  # the raw text
    assert decl.retry_policy(embedder, "other").attempts == 1, "a different namespace is not the same dependency"


def test_retry_override_without_default_and_unmatched_dependency():
    decl = parse_declarations({DEPENDS_ON: "a, b", RETRY + ".a": "attempts=2, timeout=1s"})
    a, b = decl.depends_on
    assert decl.retry_policy(a, "ns").attempts == 2
    assert decl.retry_policy(b, "ns") is NO_RETRY


def test_retry_override_with_no_target_is_an_error():
    decl = parse_declarations({RETRY + ".": "attempts=2"})
    assert any("names no dependency" in e.message for e in decl.errors)
    assert decl.retry_for == {}


def test_exempt_ids_and_globs():
    rules, errors = parse_exempt("GW-OBS-002, gw-obs-*\nGW-DEP-004")
    assert rules == {"GW-OBS-002", "GW-OBS-*", "GW-DEP-004"}
    assert errors == []


@pytest.mark.parametrize("bad", ["OBS-002", "GW-OBS-2", "GW-OB-002", "everything", "GW-*"])
def test_exempt_bad_ids_are_quoted(bad):
    rules, errors = parse_exempt(f"GW-OBS-002, {bad}")
    assert rules == {"GW-OBS-002"}
    assert len(errors) == 1 and f'"{bad}"' in errors[0].message and errors[0].key == EXEMPT


def test_declarations_exempt_reason_and_unrelated_annotations():
    decl = parse_declarations({
        EXEMPT: "GW-OBS-002", EXEMPT_REASON: "  batch sidecar, JIRA-12  ",
        "prometheus.io/scrape": "true", "guywire.dev/unknown-key": "whatever",
    })
    assert decl.exempt == {"GW-OBS-002"}
    assert decl.exempt_reason == "batch sidecar, JIRA-12"
    # a mistyped guywire.dev/ key would silently drop a declaration: it is reported, the rest is kept
    assert [e.key for e in decl.errors] == ["guywire.dev/unknown-key"]
    assert "is not a guywire annotation" in decl.errors[0].message


def test_declarations_never_raise_on_absurd_values():
    absurd = {
        DEPENDS_ON: "\x00\x01" + "ä" * 5000 + ", ::::, external::::, ..., a" * 50,
        RETRY: "=" * 1000 + ", attempts=" + "9" * 400 + ", timeout=" + "1" * 400 + "h",
        RETRY + ".x": "\n\n\n",
        EXEMPT: "GW-" * 1000,
        "guywire.dev/depends-on-typo": "x",
    }
    decl = parse_declarations(absurd)
    assert decl.errors
    for err in decl.errors:
        assert len(err.render()) < 1000


def test_declarations_non_string_values_are_errors():
    decl = parse_declarations({DEPENDS_ON: 3, RETRY: None})  # type: ignore[dict-item]
    assert [e.key for e in decl.errors] == [DEPENDS_ON, RETRY]
    assert all("must be a string" in e.message for e in decl.errors)
