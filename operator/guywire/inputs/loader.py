"""Reading manifests from files, directories and stdin, with the line each object starts on.

Nothing here raises for bad input: every problem becomes a Diagnostic naming the
file and line, and every object that could be read is returned.
"""
from __future__ import annotations

import fnmatch
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import yaml

from ..model.finding import SourceRef
from ..speed.forked_call import ChildFailed, ForkedCall, can_fork

try:  # the C loader is several times faster on large inputs
    YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    YamlLoader = yaml.SafeLoader

_MAP, _SEQ, _STR = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:str"
_INT, _BOOL, _NULL = "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"
_ScalarNode, _MappingNode = yaml.nodes.ScalarNode, yaml.nodes.MappingNode
_BUSY = object()


class _Fallback(Exception):
    """A document with something the fast constructor leaves to PyYAML's (merge keys, !!set, unhashable keys...)."""


class FastLoader(YamlLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader, with the two parts that run in Python per node made cheaper.

    libyaml parses and composes in C, but PyYAML then resolves every scalar's tag and builds every
    Python object through generic Python code, about 60% of ``yaml.load_all`` on Kubernetes manifests.
    ``resolve`` here does the same regex matching from a table made once, and ``construct_fast`` builds
    dicts, lists and scalars directly. The result is what ``yaml.safe_load`` gives, except that a
    recursive alias is refused; anything else unusual (merge keys ``<<``, ``!!set``, ``!!omap``, custom
    tags, unhashable keys) makes the whole document go through PyYAML's own constructor instead.
    """

    _table: dict[str, tuple] = {}

    @classmethod
    def _resolvers(cls) -> dict[str, tuple]:
        if not cls._table:
            wild = list(cls.yaml_implicit_resolvers.get(None, []))
            cls._table = {k: tuple(v + wild) for k, v in cls.yaml_implicit_resolvers.items() if k is not None}
            cls._table[None] = tuple(wild)  # type: ignore[index]
        return cls._table

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is _ScalarNode:
            if implicit[0] and not self.yaml_path_resolvers:
                table = self._table or self._resolvers()
                for tag, regexp in table.get(value[:1], table[None]):  # type: ignore[index]
                    if regexp.match(value):
                        return tag
                return _STR
        elif not self.yaml_path_resolvers:
            return _MAP if kind is _MappingNode else _SEQ
        return super().resolve(kind, value, implicit)

    def construct_fast(self, node: Any) -> Any:
        try:
            return self._build(node, {})
        except _Fallback:
            return self.construct_document(node)

    def _build(self, node: Any, memo: dict) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == _MAP or tag == _SEQ:
            key = id(node)
            done = memo.get(key)
            if done is not None:
                if done is _BUSY:
                    raise yaml.constructor.ConstructorError(
                        None, None, "found an alias used inside its own anchor (a recursive structure); "
                        "a Kubernetes object cannot be recursive", node.start_mark)
                return done
            memo[key] = _BUSY
            if tag == _SEQ:
                out: Any = [self._build(item, memo) for item in node.value]
            else:
                out = {}
                for k, v in node.value:
                    if k.tag == _STR:
                        out[k.value] = self._build(v, memo)
                        continue
                    if k.tag == "tag:yaml.org,2002:merge":
                        raise _Fallback
                    name = self._build(k, memo)
                    try:
                        out[name] = self._build(v, memo)
                    except TypeError:  # an unhashable key: PyYAML's constructor words the error
                        raise _Fallback from None
            memo[key] = out
            return out
        if tag == _INT:
            value = node.value
            if value.isdigit() and (value[0] != "0" or len(value) == 1):
                return int(value)
        elif tag == _NULL:
            return None
        elif tag == _BOOL:
            return self.bool_values[node.value.lower()]
        if isinstance(node, _ScalarNode) and tag in self.yaml_constructors:
            return self.yaml_constructors[tag](self, node)  # floats, other ints, timestamps, binary
        raise _Fallback

SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 64 * 1024 * 1024  # one input, stdin included
MAX_TOTAL_BYTES = 256 * 1024 * 1024  # every input of one run together


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A problem with the input. ``error`` ones make the CLI exit 2; the others are counted skips."""

    source: SourceRef
    message: str
    error: bool = True
    warning: bool = False  # not an error, but always shown (e.g. an object defined twice)
    quiet: bool = False  # only for --verbose (a dot-folder, an excluded path, a kind not evaluated); in no report
    unread: bool = False  # the file it names was not read (missing, a FIFO or device, too large, not text)

    def render(self) -> str:
        return f"{self.source}: {self.message}"

    @property
    def level(self) -> str:
        return "error" if self.error else "warning" if self.warning else "skipped"

    def to_dict(self) -> dict:
        return {"file": self.source.file, "line": self.source.line, "message": self.message, "level": self.level}


@dataclass(frozen=True, slots=True)
class Document:
    obj: Any
    source: SourceRef


def excluded(path: str, patterns: Iterable[str]) -> str | None:
    """The first ``--exclude`` glob that matches ``path`` (as given, ``./`` dropped) or its last part."""
    if not patterns:
        return None
    norm = path.replace(os.sep, "/")
    while norm.startswith("./"):
        norm = norm[2:]
    name = norm.rstrip("/").rsplit("/", 1)[-1]
    return next((p for p in patterns if fnmatch.fnmatchcase(norm, p) or fnmatch.fnmatchcase(name, p)
                 or fnmatch.fnmatchcase(norm, p.rstrip("/") + "/*")), None)


def chart_of(templates: str) -> str | None:
    """The chart folder when ``templates`` is a Helm chart's ``templates/`` folder (a Chart.yaml beside it)."""
    parent = os.path.dirname(os.path.abspath(templates))
    if os.path.basename(os.path.normpath(templates)) == "templates" and os.path.isfile(os.path.join(parent, "Chart.yaml")):
        return os.path.dirname(os.path.normpath(templates)) or "."
    return None


def chart_templates(folder: str) -> Diagnostic:
    chart = chart_of(folder) or "CHART"
    return Diagnostic(SourceRef(folder), f"Helm chart templates (unrendered {{{{ ... }}}}), not manifests; skipped. "
                      f"Render the chart and pipe it in: helm template RELEASE {chart} | guywire check -",
                      error=False, warning=True)


def iter_files(path: str, exclude: Iterable[str] = ()) -> Iterator[str | Diagnostic]:
    """The files under ``path`` to read, in order, and a Diagnostic for each folder or file left out: dot-folders
    and ``exclude`` matches (quiet: shown with --verbose), a Helm chart's ``templates/`` (a warning), a folder
    that cannot be listed (an error)."""
    if path == "-":
        yield "-"
        return
    pattern = excluded(path, exclude)
    if pattern:
        yield Diagnostic(SourceRef(path), f"matches --exclude {pattern}; skipped.", error=False, quiet=True)
        return
    p = Path(path)
    if p.is_dir():
        if chart_of(path):
            yield chart_templates(path)
            return
        unlisted: list[OSError] = []
        for root, dirs, files in os.walk(p, onerror=unlisted.append):
            yield from _unlisted(unlisted)
            keep = []
            for d in sorted(dirs):
                full = os.path.join(root, d)
                if d.startswith("."):
                    yield Diagnostic(SourceRef(full), "dot-folder; skipped (name it to read it).", error=False,
                                     quiet=True)
                elif (pattern := excluded(full, exclude)):
                    yield Diagnostic(SourceRef(full), f"matches --exclude {pattern}; skipped.", error=False,
                                     quiet=True)
                elif d == "templates" and "Chart.yaml" in files:
                    yield chart_templates(full)
                else:
                    keep.append(d)
            dirs[:] = keep
            for f in sorted(files):
                if f.endswith(SUFFIXES):
                    full = os.path.join(root, f)
                    if (pattern := excluded(full, exclude)):
                        yield Diagnostic(SourceRef(full), f"matches --exclude {pattern}; skipped.", error=False,
                                         quiet=True)
                    else:
                        yield full
        yield from _unlisted(unlisted)
    else:
        folder = os.path.dirname(path)
        while folder and os.path.basename(folder) != "templates" and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        if folder and chart_of(folder):
            yield chart_templates(folder)
            return
        yield path


def _unlisted(errors: list[OSError]) -> Iterator[Diagnostic]:
    while errors:
        exc = errors.pop(0)
        yield Diagnostic(SourceRef(str(exc.filename or "?")), f"cannot be listed: {exc.strerror or exc}.")


def _kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, words in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return words
    return "not a regular file"


def _read_capped(fd: int, limit: int) -> bytes | None:
    """At most ``limit`` bytes from ``fd``; None when there are more."""
    chunks: list[bytes] = []
    got = 0
    while True:
        chunk = os.read(fd, min(1 << 20, limit + 1 - got))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        got += len(chunk)
        if got > limit:
            return None


def _too_large(limit: int, size: int | None = None) -> str:
    what = f"is {size} bytes" if size is not None else f"holds more than {limit} bytes"
    if limit >= MAX_FILE_BYTES:
        return f"{what}, above the {MAX_FILE_BYTES} byte limit for one input; not read."
    return (f"{what}, above the {limit} bytes left of the {MAX_TOTAL_BYTES} byte limit on all inputs together; "
            "not read. Check fewer files at a time.")


def _unread(src: SourceRef, text: str) -> Diagnostic:
    return Diagnostic(src, text, unread=True)


def _read(name: str, limit: int = MAX_FILE_BYTES) -> tuple[str | None, Diagnostic | None]:
    """The text of one input, read only when it is a regular file (or stdin) of at most ``limit`` bytes.
    A FIFO or device is never opened for a blocking read: it is skipped with an error. The diagnostic of an
    input left unread says ``unread``; one read but not text (binary, not UTF-8) does not."""
    src = SourceRef(name if name != "-" else "<stdin>")
    try:
        if name == "-":
            data = sys.stdin.buffer.read(limit + 1)  # reads until EOF or limit + 1 bytes, never beyond
            data = None if len(data) > limit else data
        else:
            # O_NONBLOCK: opening a FIFO with no writer must not hang; regular files ignore it
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
            try:
                info = os.fstat(fd)
                what = _kind_of(info.st_mode)
                if what is not None:
                    return None, _unread(src, f"is {what}, not a regular file; skipped.")
                if info.st_size > limit:
                    return None, _unread(src, _too_large(limit, info.st_size))
                data = _read_capped(fd, limit)
            finally:
                os.close(fd)
        if data is None:
            return None, _unread(src, _too_large(limit))
    except FileNotFoundError:
        return None, _unread(src, "no such file or directory.")
    except IsADirectoryError:
        return None, _unread(src, "is a directory.")
    except OSError as exc:
        return None, _unread(src, f"cannot be read: {exc.strerror or exc}.")
    if b"\x00" in data[:8192]:
        return None, Diagnostic(src, "is a binary file, not YAML or JSON.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, Diagnostic(src, f"is not UTF-8 text (byte {exc.start}); not YAML or JSON.")
    return text, None


def _yaml_error(file: str, exc: yaml.YAMLError, template: bool = False) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    col = f" column {mark.column + 1}" if mark is not None else ""
    text = f"YAML syntax error{col}: {problem}" + (f" ({context})" if context else "")
    text = text.rstrip(".") + "."
    if template:
        text += " It holds {{ ... }}: an unrendered template? Render it first (helm template ... | guywire check -)."
    return Diagnostic(SourceRef(file, line), text)


_HELM_SOURCE = "# Source: "


def helm_sources(text: str) -> list[tuple[int, str]]:
    """The ``# Source: chart/templates/x.yaml`` comments ``helm template`` writes above each document, with
    their line numbers; empty for other text."""
    if _HELM_SOURCE not in text:
        return []
    return [(n, line[len(_HELM_SOURCE):].strip()) for n, line in enumerate(text.splitlines(), 1)
            if line.startswith(_HELM_SOURCE) and line[len(_HELM_SOURCE):].strip()]


def _template_before(templates: list[tuple[int, str]], after: int, line: int | None) -> str | None:
    """The last ``# Source:`` comment between the previous document's first line and this one's."""
    import bisect

    if line is None:
        return None
    i = bisect.bisect_left(templates, (line, "")) - 1
    return templates[i][1] if i >= 0 and templates[i][0] > after else None


def parse_text(text: str, file: str) -> tuple[list[Document], list[Diagnostic]]:
    docs: list[Document] = []
    diags: list[Diagnostic] = []
    if file.endswith(".json"):
        try:
            return _expand(json.loads(text), SourceRef(file, 1), diags), diags
        except json.JSONDecodeError as exc:
            return [], [Diagnostic(SourceRef(file, exc.lineno), f"JSON syntax error column {exc.colno}: {exc.msg}.")]
        except RecursionError:
            return [], [Diagnostic(SourceRef(file, 1), "JSON nested too deeply to read.")]
    templates = helm_sources(text)
    previous = 0
    loader = FastLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1 if node is not None else None
            if node is None:
                continue
            try:
                obj = loader.construct_fast(node)
            except yaml.YAMLError as exc:
                diags.append(_yaml_error(file, exc, "{{" in text))
                continue
            template = _template_before(templates, previous, line) if templates else None
            previous = line or previous
            docs.extend(_expand(obj, SourceRef(file, line, template), diags))
    except yaml.YAMLError as exc:
        diags.append(_yaml_error(file, exc, "{{" in text))
    except RecursionError:
        diags.append(Diagnostic(SourceRef(file), "YAML nested too deeply to read."))
    finally:
        loader.dispose()
    return docs, diags


_TYPE_NAMES = {"str": "string", "int": "number", "float": "number", "bool": "boolean", "list": "list"}


def _type_name(obj: Any) -> str:
    return _TYPE_NAMES.get(type(obj).__name__, type(obj).__name__)


def _expand(obj: Any, source: SourceRef, diags: list[Diagnostic]) -> list[Document]:
    """A document, or the items of a ``kind: List``."""
    if obj is None:
        return []
    if not isinstance(obj, dict):
        diags.append(Diagnostic(source, f"document is a {_type_name(obj)}, not a Kubernetes object."))
        return []
    kind = obj.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
        out = []
        for i, item in enumerate(obj["items"]):
            if isinstance(item, dict):
                out.append(Document(item, source))
            else:
                diags.append(Diagnostic(source, f"items[{i}] is a {_type_name(item)}, not a Kubernetes object."))
        return out
    return [Document(obj, source)]


def load_file(name: str, limit: int = MAX_FILE_BYTES) -> tuple[list[Document], list[Diagnostic]]:
    """The objects in one file (``-``: stdin) of at most ``limit`` bytes and its diagnostics. Never raises
    for bad input."""
    shown = name if name != "-" else "<stdin>"
    text, diag = _read(name, limit)
    if diag:
        return [], [diag]
    d, g = parse_text(text or "", shown)
    if not d and not g:
        g = [Diagnostic(SourceRef(shown), "holds no objects.", error=False)]
    return d, g


# Below these, a second process costs more than it saves.
PARALLEL_MIN_FILES = 16
PARALLEL_MIN_BYTES = 256 * 1024


def _can_fork(names: list[str]) -> bool:
    if not can_fork() or "-" in names:
        return False
    if len(names) < PARALLEL_MIN_FILES:
        return False
    try:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    except OSError:
        cpus = 1
    if cpus < 2:
        return False
    import threading  # forking a process that runs other threads can deadlock the child

    return threading.active_count() == 1


_FRONT, _BACK = 0, 8  # where the next index each side takes is, in the page the two processes share


def _parse_from_the_front(names: list[str], limits: list[int], order: list[int], shared: Any
                          ) -> dict[int, tuple[list[Document], list[Diagnostic]]]:
    """The child's share: the files in ``order`` from the front until it meets the parent coming from the back."""
    import struct

    slot = struct.Struct("q")
    done = {}
    k = 0
    while k <= slot.unpack_from(shared, _BACK)[0]:
        slot.pack_into(shared, _FRONT, k + 1)
        done[order[k]] = load_file(names[order[k]], limits[order[k]])
        k += 1
    return done


def _load_parallel(names: list[str], meanwhile: Callable[[], object] | None, limits: list[int]
                   ) -> dict[int, tuple[list[Document], list[Diagnostic]]] | None:
    """Parse the files in two processes. Parsing is most of ``guywire check``'s work, and libyaml holds
    the GIL, so threads cannot share it; a forked child can.

    The files are ordered largest first; the child takes them from the front, the parent (after
    ``meanwhile``, such as importing the engine) from the back, each writing the next index it takes in a
    shared page, until they meet: the split balances itself whatever the files cost to parse. Both may
    take the file where they meet; the parent's copy is kept. The child sends its results back pickled.
    Anything going wrong with the child (it dies, its answer does not unpickle) only means the parent
    parses what the child did not send. None: too few bytes to be worth it, or no fork; parse in one."""
    import mmap
    import struct

    sizes = []
    for i, name in enumerate(names):
        try:
            sizes.append((os.path.getsize(name), i))
        except OSError:
            sizes.append((0, i))
    if sum(s for s, _ in sizes) < PARALLEL_MIN_BYTES:
        return None
    order = [i for _, i in sorted(sizes, key=lambda x: -x[0])]
    shared = mmap.mmap(-1, 16)  # anonymous and shared across fork: [next front index, next back index]
    slot = struct.Struct("q")
    slot.pack_into(shared, _FRONT, 0)
    slot.pack_into(shared, _BACK, len(order) - 1)
    child = ForkedCall(_parse_from_the_front, names, limits, order, shared, nice=0)
    if not child.forked:
        shared.close()
        return None
    if meanwhile:
        meanwhile()
    results = {}
    k = len(order) - 1
    while k >= slot.unpack_from(shared, _FRONT)[0]:
        slot.pack_into(shared, _BACK, k - 1)
        results[order[k]] = load_file(names[order[k]], limits[order[k]])
        k -= 1
    try:
        received: Any = child.wait()
    except ChildFailed:  # parsed again below
        received = {}
    shared.close()
    for i in range(len(names)):
        if i not in results:
            results[i] = received[i] if isinstance(received, dict) and i in received else \
                load_file(names[i], limits[i])
    return results


def read_limits(names: list[str], total: int | None = None) -> list[int]:
    """How many bytes each input may hold, so that all of them together stay within ``total``: regular
    files take their size (by ``stat``, which neither opens nor blocks) in order while it fits; stdin, whose
    size is unknown, gets what the files leave (at most ``MAX_FILE_BYTES``). A file is read only up to its
    limit, so one that grows meanwhile is refused rather than read without bound."""
    left = MAX_TOTAL_BYTES if total is None else total
    limits: list[int] = []
    for name in names:
        size = 0
        if name != "-":
            try:
                info = os.stat(name)
                size = info.st_size if stat.S_ISREG(info.st_mode) else 0
            except OSError:
                pass
        limits.append(min(MAX_FILE_BYTES, left))
        if size <= limits[-1]:
            left -= size
    stdin_limit = min(MAX_FILE_BYTES, left)
    return [stdin_limit if name == "-" else limit for name, limit in zip(names, limits)]


def load(paths: list[str], meanwhile: Callable[[], object] | None = None, exclude: Iterable[str] = ()
         ) -> tuple[list[Document], list[Diagnostic], int]:
    """Every object under ``paths``, in the order of the paths and the files in them; the diagnostics;
    how many files were read (a FIFO, device or file too large is not). Large inputs are parsed by two processes (``GUYWIRE_PARALLEL=0``: one);
    the parent then runs ``meanwhile`` while the child parses, else ``meanwhile`` is not called."""
    entries: list[str | Diagnostic] = []
    for path in paths:
        if path != "-" and not os.path.exists(path):
            entries.append(Diagnostic(SourceRef(path), "no such file or directory."))
            continue
        entries.extend(iter_files(path, exclude))
    names = [e for e in entries if isinstance(e, str)]
    limits = read_limits(names)
    by_index = _load_parallel(names, meanwhile, limits) if _can_fork(names) else None
    if by_index is not None:
        parsed = iter(by_index[i] for i in range(len(names)))
    else:
        parsed = (load_file(n, limit) for n, limit in zip(names, limits))
    docs: list[Document] = []
    diags: list[Diagnostic] = []
    read = 0
    for entry in entries:
        if isinstance(entry, Diagnostic):
            diags.append(entry)
            continue
        d, g = next(parsed)
        docs.extend(d)
        diags.extend(g)
        read += not any(x.unread for x in g)
    return docs, diags, read
