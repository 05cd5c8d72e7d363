"""Inputs are bounded: one input and all of them together have a byte limit, stdin included; FIFOs, devices and
links to them are skipped with a message instead of read; every input error makes the CLI exit 2."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guywire.inputs import loader
from guywire.cli import main
from tests.unit.test_cli import GOOD, run, write


def test_stdin_above_the_limit_is_refused_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 2000)
    big = (GOOD + "---\n") * 10
    assert len(big) > 2000
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(big.encode())))
    rc, _, err = run(capsys, "check", "-")
    assert rc == 2
    assert "<stdin>: holds more than 2000 bytes, above the 2000 byte limit for one input; not read." in err


def test_stdin_is_read_no_further_than_the_limit(monkeypatch):
    class Endless(io.RawIOBase):
        served = 0

        def readable(self):
            return True

        def readinto(self, b):
            n = len(b)
            b[:n] = b"#" * n
            Endless.served += n
            return n

    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 1 << 16)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(Endless())))
    docs, diags, _ = loader.load(["-"])
    assert not docs and diags[0].error and "holds more than 65536 bytes" in diags[0].message
    assert Endless.served <= (1 << 16) + io.DEFAULT_BUFFER_SIZE * 2


def test_inputs_together_above_the_total_limit_exit_2(tmp_path, monkeypatch, capsys):
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD.replace("name: api\n  namespace", "name: other\n  namespace"))
    monkeypatch.setattr(loader, "MAX_TOTAL_BYTES", len(GOOD) + 10)
    rc, out, err = run(capsys, "check", "-o", "json", tmp_path)
    assert rc == 2
    assert f"b.yaml: is {len(GOOD) + 2} bytes, above the 10 bytes left of the {len(GOOD) + 10} byte limit" in err
    summary = json.loads(out)["summary"]
    assert "a.yaml" not in err and summary["workloads"] == 1 and summary["errors"] == 1  # a.yaml was judged


def test_read_limits_give_stdin_what_the_files_leave(tmp_path, monkeypatch):
    a = write(tmp_path, "a.yaml", "x" * 300)
    b = write(tmp_path, "b.yaml", "x" * 900)
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 800)
    assert loader.read_limits([str(a), "-", str(b)], total=1000) == [800, 700, 700]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_like_a_manifest_is_skipped_not_waited_on(tmp_path):
    write(tmp_path, "ok.yaml", GOOD)
    os.mkfifo(tmp_path / "x.yaml")
    # a subprocess: today's code would wait on the FIFO forever; the timeout only ends such a run
    proc = subprocess.run([sys.executable, "-m", "guywire.cli", "check", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path / 'x.yaml'}: is a named pipe (FIFO), not a regular file; skipped." in proc.stderr


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_link_to_a_device_is_skipped_and_exits_2(tmp_path, capsys):
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    rc, _, err = run(capsys, "check", link)
    assert rc == 2
    assert "zero.yaml: is a character device, not a regular file; skipped." in err


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="no FIFOs or /dev/zero")
def test_only_the_files_read_are_counted(tmp_path, monkeypatch, capsys):
    write(tmp_path, "ok.yaml", GOOD)
    os.mkfifo(tmp_path / "x.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    write(tmp_path, "big.yaml", "#" * (len(GOOD) + 1))
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", len(GOOD))  # big.yaml is left unread too
    rc, out, err = run(capsys, "check", "-o", "json", tmp_path)
    assert rc == 2 and err.count("not a regular file; skipped.") == 2 and f"big.yaml: is {len(GOOD) + 1} bytes" in err
    assert json.loads(out)["summary"]["files"] == 1
    rc, out, _ = run(capsys, "check", tmp_path / "ok.yaml", tmp_path / "x.yaml", tmp_path / "zero.yaml")
    assert "evaluated from 1 file(s)" in out


def test_running_out_of_memory_exits_2(monkeypatch, capsys):
    def exhausted(*_a, **_k):
        raise MemoryError

    monkeypatch.setattr("guywire.cli.load", exhausted)
    rc, _, err = run(capsys, "check", "-")
    assert rc == 2 and "out of memory" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root lists every folder")
def test_a_folder_that_cannot_be_listed_exits_2(tmp_path, capsys):
    write(tmp_path, "ok.yaml", GOOD)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        rc, _, err = run(capsys, "check", tmp_path)
    finally:
        locked.chmod(0o755)
    assert rc == 2 and "locked: cannot be listed: Permission denied." in err
