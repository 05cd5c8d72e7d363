"""`guywire run` without a usable cluster configuration says so in one line, naming the file and what to do."""
from __future__ import annotations

import os

import pytest

from guywire.cli import main


@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    return tmp_path


def one_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_a_missing_kubeconfig_file_is_named(no_cluster, capsys):
    assert main(["run", "--kubeconfig", str(no_cluster / "kc.yaml")]) == 2
    assert one_line(capsys).startswith(f"guywire: kubeconfig {no_cluster / 'kc.yaml'}: no such file; pass --kubeconfig")


def test_a_broken_kubeconfig_file_is_named(no_cluster, capsys):
    broken = no_cluster / "kc.yaml"
    broken.write_text("clusters: [\n")
    assert main(["run", "--kubeconfig", str(broken)]) == 2
    assert one_line(capsys).startswith(f"guywire: kubeconfig {broken}: cannot be used (")


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "folder"])
def test_a_kubeconfig_that_is_no_regular_file_is_never_read(no_cluster, capsys, special):
    if special == "fifo":
        special = str(no_cluster / "kc.fifo")
        os.mkfifo(special)  # reading it would block for ever
    elif special == "folder":
        special = str(no_cluster)
    assert main(["run", "--kubeconfig", special]) == 2
    assert one_line(capsys).startswith(f"guywire: kubeconfig {special}: not a regular file (")


def test_a_kubeconfig_variable_naming_a_device_is_named(no_cluster, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/dev/zero")
    assert main(["run"]) == 2
    assert one_line(capsys).startswith("guywire: kubeconfig /dev/zero: not a regular file (")


def test_no_kubeconfig_and_no_pod_says_what_to_set(no_cluster, capsys):
    assert main(["run"]) == 2
    line = one_line(capsys)
    assert f"kubeconfig {no_cluster / 'absent'} does not exist" in line
    assert line.rstrip().endswith("set KUBECONFIG or pass --kubeconfig FILE.")


def unreachable_kubeconfig(folder, server: str):
    path = folder / "kc.yaml"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    return path


def closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, never listening: a connection to it is refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_api_server_is_named_once_before_kopf_starts(no_cluster, capsys, monkeypatch):
    import kopf

    started = []
    monkeypatch.setattr(kopf, "operator", lambda *a, **k: started.append(1))
    port = closed_port()
    kubeconfig = unreachable_kubeconfig(no_cluster, f"https://127.0.0.1:{port}")
    assert main(["run", "--kubeconfig", str(kubeconfig)]) == 2
    line = one_line(capsys)
    assert line.startswith(f"guywire: cannot reach the API server https://127.0.0.1:{port} (kubeconfig {kubeconfig}): "
                           "Connection refused; check that the cluster is running")
    assert not started
