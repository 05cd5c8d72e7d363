"""guywire webhook-config prints plain YAML (no anchors) and warns on stderr when it has no caBundle."""
from __future__ import annotations

import base64

import yaml

from .test_cli import run, write


def test_plain_yaml_without_anchors_and_a_warning_without_ca(capsys):
    rc, out, err = run(capsys, "webhook-config", "--service", "guywire/guywire")
    assert rc == 0
    assert "&id" not in out and "*id" not in out
    doc = yaml.safe_load(out)
    assert doc["kind"] == "ValidatingWebhookConfiguration"
    assert all("caBundle" not in w["clientConfig"] for w in doc["webhooks"])
    assert "warning: no --ca-file" in err and "caBundle" in err


def test_with_a_ca_file_the_bundle_is_there_and_nothing_is_warned(tmp_path, capsys):
    ca = write(tmp_path, "ca.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    rc, out, err = run(capsys, "webhook-config", "--ca-file", ca)
    assert rc == 0 and err == ""
    bundles = {w["clientConfig"]["caBundle"] for w in yaml.safe_load(out)["webhooks"]}
    assert bundles == {base64.b64encode(ca.read_bytes()).decode()}
    assert "&id" not in out
    rc, out, err = run(capsys, "webhook-config", "--ca-file", tmp_path / "missing.crt")
    assert rc == 2 and "--ca-file" in err and "cannot be read" in err


def test_a_private_key_is_refused_and_never_put_into_the_ca_bundle(tmp_path, capsys):
    for label in ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"):
        key = write(tmp_path, "tls.key", f"-----BEGIN {label}-----\nMIIEsecret\n-----END {label}-----\n")
        rc, out, err = run(capsys, "webhook-config", "--ca-file", key)
        assert rc == 2 and out == ""
        assert f"--ca-file {key} holds a {label}" in err and "ca.crt" in err and "MIIEsecret" not in err
    both = write(tmp_path, "bundle.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                                         "-----BEGIN PRIVATE KEY-----\nMIIEsecret\n-----END PRIVATE KEY-----\n")
    rc, out, err = run(capsys, "webhook-config", "--ca-file", both)
    assert rc == 2 and out == "" and "holds a PRIVATE KEY" in err


def test_a_file_without_a_certificate_leaves_the_bundle_out_with_a_warning(tmp_path, capsys):
    for text, found in (("not a certificate\n", "no PEM block"),
                        ("-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n", "only PUBLIC KEY blocks")):
        junk = write(tmp_path, "ca.crt", text)
        rc, out, err = run(capsys, "webhook-config", "--ca-file", junk)
        assert rc == 0
        assert all("caBundle" not in w["clientConfig"] for w in yaml.safe_load(out)["webhooks"])
        assert f"warning: --ca-file {junk} holds {found}, not a PEM CERTIFICATE" in err and "no caBundle" in err
