"""Every speed trick gives what the plain way gives, on examples/ and on the shared corpus of real manifests:

- forked parsing (two processes, ``GUYWIRE_PARALLEL=1``) reads what one process reads, in the same order,
  and ``guywire check`` judges the same;
- the fast YAML constructor (``FastLoader``) builds what ``yaml.safe_load_all`` builds;
- compacted views (every string interned, as the operator keeps them) equal the plain views and are
  judged the same;
- the tuple-or-set multi-map index answers as a dict of sets does, through any run of adds and discards.

test_loader.py holds the small, hand-made cases of the first two (odd YAML, a dying child); here they
meet real inputs. Speed itself is measured in bench/, never asserted.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import yaml

from guywire.speed import compact as compact_module
from guywire.inputs import loader
from guywire.views import inventory
from guywire.cli import main
from guywire.clock import ManualClock
from guywire.graph.dependency_graph import index_add, index_discard, index_get
from guywire.inputs.loader import FastLoader, load, load_file
from guywire.model.finding import SourceRef
from tests.snapshot import deep_state, differences

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CORPUS = ROOT.parent / "shared" / "corpus"
NOW = "2026-11-22T10:00:00Z"

INPUTS = [pytest.param(EXAMPLES, id="examples"),
          pytest.param(CORPUS, id="corpus", marks=pytest.mark.skipif(
              not CORPUS.is_dir(), reason=f"no manifest corpus at {CORPUS}"))]


def yaml_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


@pytest.fixture
def forking(monkeypatch):
    """Two processes whenever fork exists, whatever the input's size and the threads running: the test
    session may run threads (integration tests' servers), which ``_can_fork`` rightly refuses to fork."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(loader, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(loader, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(loader, "_can_fork", lambda names: os.environ.get("GUYWIRE_PARALLEL") != "0")
    monkeypatch.setenv("GUYWIRE_PARALLEL", "1")


def _flat(result) -> tuple:
    docs, diags, files = result
    return [(d.obj, str(d.source)) for d in docs], [d.render() for d in diags], files


# ----- forked parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("root", INPUTS)
def test_forked_parsing_reads_what_one_process_reads(root, forking, monkeypatch):
    forked = []
    together = _flat(load([str(root)], meanwhile=lambda: forked.append(os.getpid())))
    assert forked == [os.getpid()], "the input was not parsed in two processes"
    monkeypatch.setenv("GUYWIRE_PARALLEL", "0")
    alone = _flat(load([str(root)], meanwhile=lambda: forked.append("one process")))
    assert forked == [os.getpid()]
    assert together[2] == alone[2] == len(yaml_files(root)) + len(list(root.rglob("*.json")))
    assert together[1] == alone[1]
    assert len(together[0]) == len(alone[0]) > 0
    assert together[0] == alone[0]


@pytest.mark.parametrize("root", INPUTS)
def test_check_judges_the_same_with_and_without_forked_parsing(root, forking, monkeypatch, capsys):
    def check() -> tuple[int, dict, str]:
        code = main(["check", str(root), "--now", NOW, "--format", "json"], clock=ManualClock(NOW))
        out, err = capsys.readouterr()
        return code, json.loads(out), err

    together = check()
    monkeypatch.setenv("GUYWIRE_PARALLEL", "0")
    alone = check()
    assert together == alone
    assert together[1]["findings"]


# ----- the fast YAML constructor ----------------------------------------------------------------------------------


def _fast_documents(text: str) -> list:
    ld, out = FastLoader(text), []
    try:
        while ld.check_node():
            node = ld.get_node()
            out.append(None if node is None else ld.construct_fast(node))
    finally:
        ld.dispose()
    return out


def _safe_documents(text: str) -> list:
    return list(yaml.load_all(text, Loader=yaml.SafeLoader))


@pytest.mark.parametrize("root", INPUTS)
def test_the_fast_constructor_builds_what_safe_load_builds_on_every_document(root):
    compared = errors = 0
    for path in yaml_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            expected = _safe_documents(text)
        except yaml.YAMLError:
            with pytest.raises(yaml.YAMLError):
                _fast_documents(text)
            errors += 1
            continue
        got = _fast_documents(text)
        assert [d for d in got if d is not None] == [d for d in expected if d is not None], path
        assert [type(d) for d in got if d is not None] == [type(d) for d in expected if d is not None], path
        compared += 1
    assert compared > errors


@pytest.mark.parametrize("root", INPUTS)
def test_load_file_gives_the_objects_safe_load_gives(root):
    """Through the loader as the commands use it: each file's objects (a List expanded) as safe_load reads them."""
    for path in yaml_files(root):
        docs, diags = load_file(str(path))
        if any(d.error for d in diags):
            continue
        expected = []
        for d in _safe_documents(path.read_text(encoding="utf-8")):
            if isinstance(d, dict) and d.get("kind") == "List" and isinstance(d.get("items"), list):
                expected += [i for i in d["items"] if isinstance(i, dict)]
            elif isinstance(d, dict):
                expected.append(d)
        assert [d.obj for d in docs] == expected, path


# ----- compacted (interned) views ---------------------------------------------------------------------------------


def _views(root: Path) -> list:
    docs, _, _ = load([str(root)])
    out = []
    for doc in docs:
        try:
            view = inventory.view_of(doc.obj, doc.source)
        except inventory.ParseError:
            continue
        if view is not None:
            out.append(view)
    return out


@pytest.mark.parametrize("root", INPUTS)
def test_a_compacted_view_equals_the_plain_view(root):
    plain, compacted = _views(root), [compact_module.compact(v) for v in _views(root)]
    assert len(plain) == len(compacted) > 0
    for a, b in zip(plain, compacted):
        assert a == b
        assert deep_state(a) == deep_state(b), differences(deep_state(a), deep_state(b))


def test_compacting_shares_equal_strings():
    """What compact is for: two views read apart hold one copy of each string they share."""
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llm", "namespace": "ml"},
           "spec": {"template": {"metadata": {"labels": {"app": "llm"}},
                                 "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.6.3"}]}}}}
    first, second = (compact_module.compact(inventory.view_of(json.loads(json.dumps(obj)), SourceRef("a.yaml")))
                     for _ in range(2))
    assert first == second
    assert first.templates[0].containers[0].image is second.templates[0].containers[0].image
    assert next(iter(first.templates[0].labels)) is next(iter(second.templates[0].labels))


@pytest.mark.parametrize("root", INPUTS)
def test_check_judges_compacted_views_as_it_judges_plain_ones(root, monkeypatch, capsys):
    def check() -> tuple[int, dict]:
        code = main(["check", str(root), "--now", NOW, "--format", "json"], clock=ManualClock(NOW))
        return code, json.loads(capsys.readouterr().out)

    plain = check()
    view_of = inventory.view_of
    compacted = []

    def compacting(obj, *args, **kwargs):
        view = view_of(obj, *args, **kwargs)
        compacted.append(view)
        return compact_module.compact(view)

    monkeypatch.setattr(inventory, "view_of", compacting)
    assert check() == plain
    assert compacted, "check read no view through view_of"


# ----- the tuple-or-set index -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_the_tuple_or_set_index_answers_as_a_dict_of_sets(seed):
    rnd = random.Random(seed)
    names = [("ns", "app", str(i)) for i in range(6)]
    keys = [("Deployment", "ns", f"w{i}") for i in range(5)]
    index: dict = {}
    model: dict[tuple, set] = {}
    for _ in range(400):
        name, key = rnd.choice(names), rnd.choice(keys)
        if rnd.random() < 0.55:
            index_add(index, name, key)
            model.setdefault(name, set()).add(key)
        else:
            index_discard(index, name, key)
            model.get(name, set()).discard(key)
            if name in model and not model[name]:
                del model[name]
        for n in names:
            got = index_get(index, n)
            assert set(got) == model.get(n, set()) and len(got) == len(set(got))
        assert set(index) == set(model), "a name with no keys left must leave the index"
        # the compact form: one key alone is the key itself, not a set of one
        assert all(type(v) is tuple if len(model[n]) == 1 else type(v) is set for n, v in index.items())


def test_an_index_answer_is_a_set_or_a_tuple_of_one_or_none():
    index: dict = {}
    assert index_get(index, "a") == ()
    index_add(index, "a", ("k", "1"))
    index_add(index, "a", ("k", "1"))
    assert index_get(index, "a") == (("k", "1"),) and index["a"] == ("k", "1")
    index_add(index, "a", ("k", "2"))
    assert index_get(index, "a") == {("k", "1"), ("k", "2")}
    index_discard(index, "a", ("k", "3"))
    index_discard(index, "a", ("k", "1"))
    assert index["a"] == ("k", "2")
    index_discard(index, "a", ("k", "2"))
    assert "a" not in index
    index_discard(index, "a", ("k", "2"))
    assert index == {}
