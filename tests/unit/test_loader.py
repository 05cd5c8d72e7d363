"""The loader: its fast YAML constructor gives what yaml.safe_load gives, and parsing in two processes gives
what parsing in one gives, in the same order, whatever happens to the second process."""
import os

import pytest
import yaml

from guywire.inputs import loader
from guywire.inputs.loader import FastLoader, load, parse_text


def fast(text: str) -> list:
    """Every document of ``text`` as the loader's constructor builds it (empty documents left out)."""
    ld, out = FastLoader(text), []
    try:
        while ld.check_node():
            node = ld.get_node()
            if node is not None:
                out.append(ld.construct_fast(node))
    finally:
        ld.dispose()
    return out


@pytest.mark.parametrize("text", [
    "a: 1\nb: -7\nc: +3\nd: 0\ne: 0o17\nf: 017\ng: 0x1F\nh: 1_000\ni: 1:30\nj: '08'\n",
    "a: 1.5\nb: .inf\nc: -.Inf\nd: 1e3\ne: 6.8523015e+5\n",
    "a: true\nb: False\nc: yes\nd: off\ne: ~\nf: null\ng:\nh: 'true'\n",
    "when: 2001-12-14t21:59:43.10-05:00\nday: 2002-12-14\nquoted: '2002-12-14'\n",
    "bin: !!binary aGVsbG8=\ns: !!str 123\ni: !!int '42'\nf: !!float '1'\n",
    "base: &b {cpu: 1, memory: 1Gi}\nuse: *b\nlist: &l [1, 2]\nagain: *l\n",
    "base: &b {cpu: 1, memory: 1Gi}\nmerged:\n  <<: *b\n  cpu: 2\n",
    "set: !!set {a, b}\nomap: !!omap [{a: 1}, {b: 2}]\npairs: !!pairs [{a: 1}]\n",
    "? [a, b]\n: flow key\n",
    "1: int key\n2.5: float key\ntrue: bool key\n~: null key\n",
    "a: [1, [2, [3, {b: [4]}]]]\n---\n- x\n- y\n---\n",
    "a: |\n  line one\n  line two\nb: >\n  folded\n  text\nc: \"esc\\taped\"\n",
    "dup: 1\ndup: 2\n",
    "empty: {}\nnone: []\nstr: ''\n",
])
def test_fast_constructor_builds_what_safe_load_builds(text):
    try:
        expected = list(yaml.load_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        expected = None
    if expected is None:
        docs, diags = parse_text(text, "t.yaml")
        assert diags and diags[0].error
        return
    assert [d for d in expected if d is not None] == [d for d in fast(text) if d is not None]


def test_aliases_share_one_object_like_safe_load():
    obj = fast("a: &x {k: [1]}\nb: *x\n")[0]
    assert obj["a"] is obj["b"]


def test_an_alias_bomb_is_built_in_linear_time():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    obj = fast("\n".join(lines) + "\n")[0]  # 10**12 leaves if aliases were copied
    assert obj["a11"][0] is obj["a10"]


def test_a_recursive_alias_is_an_error_naming_the_line():
    docs, diags = parse_text("kind: Service\nmetadata:\n  name: x\nspec: &s\n  self: *s\n", "r.yaml")
    assert not docs
    assert diags[0].source.line == 4 and "recursive" in diags[0].message  # the anchor's line


def test_unknown_tags_and_unhashable_keys_are_yaml_errors_not_crashes():
    for text in ("a: !Ref other\n", "? {a: 1}\n: v\n"):
        docs, diags = parse_text(text, "t.yaml")
        assert not docs and diags and diags[0].error and diags[0].render().startswith("t.yaml:")


def test_the_resolver_table_matches_pyyaml_on_every_first_character():
    samples = ["", "~", "null", "Null", "yes", "No", "on", "OFF", "true", "False", "y", "n", "-1", "+1", "0",
               "0x1f", "0o7", "1_0", "1:20", ".5", "-.inf", ".NaN", "1e5", "2001-12-14", "<<", "=", "plain",
               "!x", "&y", "*z", "9lives", "-dash", ".hidden"]
    fast_loader, reference = FastLoader(""), yaml.SafeLoader("")
    for value in samples:
        for implicit in ((True, False), (False, True)):
            assert fast_loader.resolve(yaml.ScalarNode, value, implicit) == \
                reference.resolve(yaml.ScalarNode, value, implicit), (value, implicit)
    assert fast_loader.resolve(yaml.MappingNode, None, (True, False)) == "tag:yaml.org,2002:map"
    assert fast_loader.resolve(yaml.SequenceNode, None, (True, False)) == "tag:yaml.org,2002:seq"
    fast_loader.dispose()
    reference.dispose()


# ---- two processes ----

def _tree(tmp_path, n=24):
    for i in range(n):
        body = "".join(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}-{j}}}\n"
                       f"spec: {{ports: [{{port: {80 + j}}}]}}\n" for j in range(i % 5 + 1))
        (tmp_path / f"f{i:02}.yaml").write_text(body)
    (tmp_path / "bad.yaml").write_text("kind: Service\nmetadata: {name: [}\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    return [str(tmp_path), str(tmp_path / "missing.yaml")]


def _flat(result):
    docs, diags, files = result
    return [(d.obj, str(d.source)) for d in docs], [d.render() for d in diags], files


@pytest.fixture
def parallel(monkeypatch):
    monkeypatch.setattr(loader, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(loader, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.delenv("GUYWIRE_PARALLEL", raising=False)
    # _can_fork also refuses while other threads run (the integration tests' API servers may be up)
    monkeypatch.setattr(loader, "_can_fork", lambda names: hasattr(os, "fork") and os.environ.get(
        "GUYWIRE_PARALLEL") != "0")


def test_two_processes_give_what_one_gives_in_the_same_order(tmp_path, parallel, monkeypatch):
    paths = _tree(tmp_path)
    ran = []
    together = _flat(load(paths, meanwhile=lambda: ran.append(os.getpid())))
    monkeypatch.setenv("GUYWIRE_PARALLEL", "0")
    alone = _flat(load(paths, meanwhile=lambda: ran.append("serial")))
    assert together == alone
    assert together[2] == 27 and len(together[0]) == sum(i % 5 + 1 for i in range(24))
    assert any("no such file" in d for d in together[1]) and any("YAML syntax error" in d for d in together[1])
    if hasattr(os, "fork"):
        assert ran == [os.getpid()]  # the parent ran meanwhile once; a serial load never runs it


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_that_dies_only_means_the_parent_parses_its_files(tmp_path, parallel, monkeypatch):
    paths = _tree(tmp_path)
    parent = os.getpid()
    real = loader.load_file

    def dying(name, *rest):
        if os.getpid() != parent:
            os._exit(3)
        return real(name, *rest)

    monkeypatch.setattr(loader, "load_file", dying)
    broken = _flat(load(paths))
    monkeypatch.setattr(loader, "load_file", real)
    monkeypatch.setenv("GUYWIRE_PARALLEL", "0")
    assert broken == _flat(load(paths))


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def test_stdin_and_small_inputs_stay_in_one_process(monkeypatch):
    monkeypatch.delenv("GUYWIRE_PARALLEL", raising=False)
    monkeypatch.setattr("threading.active_count", lambda: 1)
    assert loader._can_fork([f"{i}.yaml" for i in range(100)]) == (hasattr(os, "fork") and _cpus() > 1)
    assert not loader._can_fork(["-"] * 100)
    assert not loader._can_fork(["a.yaml"])
    monkeypatch.setenv("GUYWIRE_PARALLEL", "0")
    assert not loader._can_fork([f"{i}.yaml" for i in range(100)])
