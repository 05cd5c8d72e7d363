"""The shared corpus of real-world AI manifests (kserve, lws, ai-on-eks, ...) is read without an error."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from guywire.cli import main
from guywire.inputs.loader import SUFFIXES

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no manifest corpus at {CORPUS}")


def manifest_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [Path(dirpath) / f for f in files if f.endswith(SUFFIXES)]
    return out


def test_corpus_is_read_without_errors(capsys):
    rc = main(["check", "-o", "json", str(CORPUS)])
    out, err = capsys.readouterr()
    data = json.loads(out)
    errors = [e for e in data["errors"] if e["level"] == "error"]
    assert errors == [], "\n".join(f"{e['file']}:{e['line']}: {e['message']}" for e in errors)
    assert rc != 2, err
    assert data["summary"]["files"] == len(manifest_files(CORPUS)), "every manifest file is read"
    assert data["summary"]["workloads"] > 0
    assert "Traceback" not in err and "could not be read" not in err
    assert data["summary"]["evaluationErrors"] == 0, "no rule crashed on a real manifest"
