"""check and simulate count the tries on a hop with the one function (mesh.tries_per_hop): the application's
attempts, each made through the caller's sidecar, which retries on its own. simulate nests the two loops."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .test_cli import run

FIXTURE = Path(__file__).resolve().parents[1] / "rules/GW-RTY-006/fail-app-and-mesh-both-retry.yaml"


def manifests(tmp_path, app: str, mesh: str) -> Path:
    text = FIXTURE.read_text().replace("attempts=3, perTryTimeout=20s, backoff=exponential", app) \
        .replace("retries: {attempts: 2, perTryTimeout: 20s", "retries: {" + mesh)
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    return path


def check_tries(capsys, path) -> int:
    rc, out, _ = run(capsys, "check", "-o", "json", path)
    (f,) = [f for f in json.loads(out)["findings"] if f["rule"] == "GW-RTY-001"]
    return int(re.search(r"tries ml/llm-server (\d+) times", f["message"]).group(1))


def simulated(capsys, path, *mode) -> dict:
    rc, out, _ = run(capsys, "simulate", path, "--target", "llm-server", *mode, "-o", "json")
    (hop,) = json.loads(out)["hops"]
    return hop


@pytest.mark.parametrize("app, mesh, app_tries", [
    ("attempts=2, backoff=exponential", "attempts: 3", 2),
    ("attempts=2, perTryTimeout=5s, timeout=12s, backoff=exponential", "attempts: 3, perTryTimeout: 2s", 2),
    ("attempts=3, perTryTimeout=20s, backoff=exponential", "attempts: 2, perTryTimeout: 20s", 3),
])
def test_check_and_simulate_count_the_same_tries(tmp_path, capsys, app, mesh, app_tries):
    path = manifests(tmp_path, app, mesh)
    wire = app_tries * (int(mesh.split()[1].rstrip(",")) + 1)
    assert check_tries(capsys, path) == wire
    hop = simulated(capsys, path, "--error-rate", "1")  # every try fails at once: nothing cuts a try short
    assert hop["tries"] == wire


def test_simulate_nests_the_sidecar_tries_under_each_application_try(tmp_path, capsys):
    # each application try may last 5s; the sidecar tries 2s at a time: 3 of its tries fit (2s, 2s, cut at 5s)
    path = manifests(tmp_path, "attempts=2, perTryTimeout=5s, timeout=12s, backoff=exponential",
                     "attempts: 3, perTryTimeout: 2s")
    assert check_tries(capsys, path) == 8
    hop = simulated(capsys, path, "--down")
    assert hop["tries"] == 2 * 3 and hop["seconds"] == pytest.approx(10.1, abs=0.2)
    rc, out, _ = run(capsys, "simulate", path, "--target", "llm-server", "--down")
    assert "6 tries" in out and "(2 in the application x 3 in the sidecar)" in out
