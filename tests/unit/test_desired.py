"""desired(): what one workload's annotations and Events should be, decided from its results alone (no
client, no engine, no clock of its own)."""
from __future__ import annotations

from datetime import datetime, timezone

from guywire.views.annotations import BLAST_RADIUS, COMPLEXITY_SCORE, EVALUATED_AT, VIOLATIONS
from guywire.views.inventory import view_of
from guywire.model.finding import Finding
from guywire.model.policy import Enforcement
from guywire.model.severity import Severity
from guywire.operator.desired import (NOTHING_WRITTEN, Desired, announced_of, desired, written_by,
                                      written_of)

NOW = datetime(2031, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
ENFORCING = "ClusterComplexityPolicy/enforcing"
AUDITING = "ClusterComplexityPolicy/auditing"
WARNING = "ComplexityPolicy ml/warning"
MODES = {ENFORCING: Enforcement.ENFORCE, WARNING: Enforcement.WARN, AUDITING: Enforcement.AUDIT}


def workload(uid: str | None = "uid-gw", annotations: dict | None = None):
    return view_of({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "gateway", "namespace": "ml", "uid": uid, "annotations": annotations or {}},
                    "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "gw:1.0"}]}}}})


def finding(rule: str, severity: Severity, location: str | None = None) -> Finding:
    w = workload()
    return Finding(rule=rule, name=rule.lower(), severity=severity, workload=w.ref, message=f"{rule} broken",
                   location=location)


def decide(per, *, score=7, blast="3 workloads", written=NOTHING_WRITTEN, announced=frozenset(), w=None) -> Desired:
    return desired(w or workload(), per, score if per else None, blast, written=written, announced=set(announced),
                   enforcement=lambda ref: MODES.get(ref, Enforcement.AUDIT), now=NOW)


def test_a_violating_workload_gets_its_annotations_worst_rule_first_and_one_warning_per_rule():
    low, high = finding("GW-OBS-001", Severity.LOW), finding("GW-RTY-002", Severity.HIGH)
    patch, events = decide({ENFORCING: [low, high], WARNING: [high]})
    assert patch == {VIOLATIONS: "GW-RTY-002,GW-OBS-001", COMPLEXITY_SCORE: "7", BLAST_RADIUS: "3 workloads",
                     EVALUATED_AT: "2031-03-04T05:06:07Z"}
    assert [(t, rule) for t, rule, _ in events] == [("Warning", "GW-OBS-001"), ("Warning", "GW-RTY-002")], \
        "in the order the results give them, one per rule across policies"
    assert events[0][2] == {"message": low.render(), "key": f"uid-gw|GW-OBS-001|{low.render()}"}
    assert events[1][2]["message"] == high.render() + " (and 1 more)", "found by each of two policies"


def test_annotations_that_already_say_it_are_not_patched_again():
    per = {ENFORCING: [finding("GW-RTY-002", Severity.HIGH)]}
    patch, events = decide(per, written=("GW-RTY-002", "7", "3 workloads"), announced={"GW-RTY-002"})
    assert patch is None and events == []
    patch, _ = decide(per, written=("GW-RTY-002", "6", "3 workloads"), announced={"GW-RTY-002"})
    assert patch is not None and patch[COMPLEXITY_SCORE] == "7", "a changed score alone is written"


def test_a_workload_no_policy_looks_at_loses_guywire_s_annotations_once():
    patch, events = decide({}, written=("GW-RTY-002", "7", ""))
    assert patch == {VIOLATIONS: None, COMPLEXITY_SCORE: None, BLAST_RADIUS: None, EVALUATED_AT: None}
    assert decide({}, written=NOTHING_WRITTEN).patch is None, "nothing written, nothing to take away"
    assert events == []


def test_a_clean_workload_still_judged_has_its_score_and_no_violations_annotation():
    patch, events = decide({ENFORCING: []}, blast="")
    assert patch == {VIOLATIONS: None, COMPLEXITY_SCORE: "7", BLAST_RADIUS: None, EVALUATED_AT: "2031-03-04T05:06:07Z"}
    assert events == []


def test_an_audit_policy_annotates_but_posts_no_event():
    patch, events = decide({AUDITING: [finding("GW-RTY-002", Severity.HIGH)]})
    assert patch[VIOLATIONS] == "GW-RTY-002" and events == []


def test_a_rule_no_longer_found_posts_one_normal_event_stamped_with_the_time_given():
    patch, events = decide({ENFORCING: [finding("GW-RTY-002", Severity.HIGH)]},
                           written=("GW-RTY-002,GW-OBS-004", "7", "3 workloads"),
                           announced={"GW-RTY-002", "GW-OBS-004"})
    assert patch[VIOLATIONS] == "GW-RTY-002"
    assert events == [("Normal", "GW-OBS-004", {"message": "[GW-OBS-004] Deployment ml/gateway: no longer violated.",
                                                 "key": "uid-gw|GW-OBS-004|resolved|2031-03-04T05:06:07Z"})]


def test_a_rule_left_only_to_an_audit_policy_counts_as_no_longer_violated():
    _, events = decide({AUDITING: [finding("GW-RTY-002", Severity.HIGH)]}, announced={"GW-RTY-002"})
    assert [(t, rule) for t, rule, _ in events] == [("Normal", "GW-RTY-002")]


def test_several_findings_of_one_rule_are_one_event_naming_the_worst_and_counting_the_rest():
    worst = finding("GW-RES-001", Severity.HIGH, "container app")
    other = finding("GW-RES-001", Severity.LOW, "container sidecar")
    _, events = decide({ENFORCING: [other], WARNING: [worst]}, w=workload(uid=None))
    ((type_, rule, ev),) = [e for e in events if e[1] == "GW-RES-001"]
    assert ev["message"] == worst.render() + " (and 1 more)"
    assert ev["key"].startswith("('ml', 'Deployment', 'gateway')|GW-RES-001|"), "no uid: the key names the object"


def test_what_was_written_reads_back_from_the_annotations():
    patch, _ = decide({ENFORCING: [finding("GW-RTY-002", Severity.HIGH), finding("GW-OBS-001", Severity.LOW)]})
    annotations = {k: v for k, v in patch.items() if v is not None}
    assert written_of(annotations) == written_by(patch) == ("GW-RTY-002,GW-OBS-001", "7", "3 workloads")
    assert announced_of(annotations) == {"GW-RTY-002", "GW-OBS-001"}
    assert announced_of({}) == set() and written_of({}) == NOTHING_WRITTEN
    w = workload(annotations=annotations)
    assert decide({ENFORCING: [finding("GW-RTY-002", Severity.HIGH), finding("GW-OBS-001", Severity.LOW)]},
                  w=w, written=written_of(w.annotations), announced=announced_of(w.annotations)) == (None, [])
