"""GW-OBS-007 tells a placeholder image (a manifest not rendered yet) from a mutable tag: once, Low."""
from __future__ import annotations

import json

import pytest

from guywire.rules.observability import image_is_mutable, image_is_placeholder

from .test_cli import run

ROOT_FIXTURE = "tests/rules/GW-OBS-007/fail-placeholder-image.yaml"


@pytest.mark.parametrize("image", ["$IMAGE_URL", "${REGISTRY}/app:${TAG}", "<image>", "registry/<team>/app:1.0",
                                   "{{ .Values.image }}", "__IMAGE__", "%IMAGE%", "$(IMAGE)",
                                   "$(REGISTRY)/app:1.0", "REPLACE_ME", "IMAGE_PLACEHOLDER", "YOUR_IMAGE:1.0"])
def test_placeholders(image):
    assert image_is_placeholder(image)


@pytest.mark.parametrize("image", ["vllm/vllm-openai:v0.6.3", "registry:5000/app", "app@sha256:abc", "nginx",
                                   "ghcr.io/org/app_name:1.0_rc1", "ghcr.io/org/app:RC_1", "nginx:STABLE_1",
                                   "registry.example.com/TEAM/app:1.0"])
def test_real_references_are_no_placeholders(image):
    assert not image_is_placeholder(image)
    assert image_is_mutable("nginx") and not image_is_mutable("vllm/vllm-openai:v0.6.3")


def test_a_placeholder_is_one_low_finding_not_a_mutable_tag(capsys):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / ROOT_FIXTURE
    rc, out, _ = run(capsys, "check", "-o", "json", path)
    (finding,) = [f for f in json.loads(out)["findings"] if f["rule"] == "GW-OBS-007"]
    assert finding["severity"] == "Low" and "placeholder image" in finding["message"]
    assert "can change under the same name" not in finding["message"]
