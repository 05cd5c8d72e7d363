"""Retries multiply along a path: 3 tries on each of 700 hops is a number of 334 digits, past a float. Counts
saturate at model.units.CALLS_CAP and say "at least", so check, simulate and graph stay finite and valid JSON,
and no rule raises (before: OverflowError in GW-RTY-002 and a traceback from simulate)."""
from __future__ import annotations

import json

import pytest
import yaml

from guywire.model.units import CALLS_CAP, render_figure, saturate

from .test_cli import run, write

HOPS = 700


def chain(tmp_path):
    docs = []
    for i in range(HOPS):
        ann = {"guywire.dev/retry": "attempts=3, perTryTimeout=1s, backoff=exponential"}
        if i + 1 < HOPS:
            ann["guywire.dev/depends-on"] = f"s{i + 1}"
        labels = {"app": f"s{i}"}
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": f"s{i}", "namespace": "ml", "annotations": ann},
                     "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
                         "containers": [{"name": "c", "image": "x:1", "ports": [{"containerPort": 80}]}]}}}})
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": "ml"},
                     "spec": {"selector": labels, "ports": [{"port": 80}]}})
    return write(tmp_path, "chain.yaml", yaml.safe_dump_all(docs))


def test_a_path_whose_calls_overflow_a_float_is_judged_at_the_cap(tmp_path, capsys):
    rc, out, err = run(capsys, "check", chain(tmp_path), "-o", "json")
    assert rc == 1, err  # findings, no evaluation error
    data = json.loads(out)
    assert data["summary"]["graph"]["maxAmplification"] == CALLS_CAP
    (first,) = [f for f in data["findings"] if f["rule"] == "GW-RTY-002" and f["workload"]["name"] == "s0"]
    assert first["observed"] == CALLS_CAP and f"can send at least {CALLS_CAP} calls" in first["message"]


def test_simulate_of_that_path_stays_finite(tmp_path, capsys):
    path = chain(tmp_path)
    rc, out, err = run(capsys, "simulate", path, "--target", f"s{HOPS - 1}.ml", "--error-rate", "0.5", "-o", "json")
    assert rc in (0, 1), err
    data = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    (entry,) = data["entries"]
    assert entry["callsToTarget"] == CALLS_CAP and entry["amplification"] == CALLS_CAP
    rc, text, err = run(capsys, "simulate", path, "--target", f"s{HOPS - 1}.ml", "--error-rate", "0.5")
    assert "Retry storm" in text and "inf" not in text.lower().replace("info", "")


def test_saturate_and_render():
    assert saturate(3) == 3 and saturate(3 ** 700) == CALLS_CAP and saturate(float("inf")) == CALLS_CAP
    assert saturate(float("nan")) == CALLS_CAP and saturate(2.5) == 2.5
    assert render_figure(CALLS_CAP, "calls") == f"at least {CALLS_CAP}" and render_figure(27, "calls") == "27"
