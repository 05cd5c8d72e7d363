"""Reading manifests from files, directories and stdin, with the line each object starts on.

Nothing here raises for bad input: every problem becomes a Diagnostic naming the
file and line, and every object that could be read is returned.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from .model.finding import SourceRef

try:  # the C loader is several times faster on large inputs
    YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    YamlLoader = yaml.SafeLoader

SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A problem with the input. ``error`` ones make the CLI exit 2; the others are counted skips."""

    source: SourceRef
    message: str
    error: bool = True
    warning: bool = False  # not an error, but always shown (e.g. an object defined twice)

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


def iter_files(path: str) -> Iterator[str]:
    if path == "-":
        yield "-"
        return
    p = Path(path)
    if p.is_dir():
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.endswith(SUFFIXES):
                    yield os.path.join(root, f)
    else:
        yield path


def _read(name: str) -> tuple[str | None, Diagnostic | None]:
    src = SourceRef(name if name != "-" else "<stdin>")
    try:
        if name == "-":
            data = sys.stdin.buffer.read()
        else:
            size = os.path.getsize(name)
            if size > MAX_FILE_BYTES:
                return None, Diagnostic(src, f"is {size} bytes, above the {MAX_FILE_BYTES} byte limit; not read.")
            with open(name, "rb") as fh:
                data = fh.read()
    except FileNotFoundError:
        return None, Diagnostic(src, "no such file or directory.")
    except IsADirectoryError:
        return None, Diagnostic(src, "is a directory.")
    except OSError as exc:
        return None, Diagnostic(src, f"cannot be read: {exc.strerror or exc}.")
    if b"\x00" in data[:8192]:
        return None, Diagnostic(src, "is a binary file, not YAML or JSON.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, Diagnostic(src, f"is not UTF-8 text (byte {exc.start}); not YAML or JSON.")
    return text, None


def _yaml_error(file: str, exc: yaml.YAMLError) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    col = f" column {mark.column + 1}" if mark is not None else ""
    text = f"YAML syntax error{col}: {problem}" + (f" ({context})" if context else "")
    return Diagnostic(SourceRef(file, line), text.rstrip(".") + ".")


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
    loader = YamlLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1 if node is not None else None
            if node is None:
                continue
            try:
                obj = loader.construct_document(node)
            except yaml.YAMLError as exc:
                diags.append(_yaml_error(file, exc))
                continue
            docs.extend(_expand(obj, SourceRef(file, line), diags))
    except yaml.YAMLError as exc:
        diags.append(_yaml_error(file, exc))
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


def load(paths: list[str]) -> tuple[list[Document], list[Diagnostic], int]:
    """Every object under ``paths``; the diagnostics; how many files were read."""
    docs: list[Document] = []
    diags: list[Diagnostic] = []
    files = 0
    for path in paths:
        if path != "-" and not os.path.exists(path):
            diags.append(Diagnostic(SourceRef(path), "no such file or directory."))
            continue
        for name in iter_files(path):
            files += 1
            text, diag = _read(name)
            if diag:
                diags.append(diag)
                continue
            d, g = parse_text(text or "", name if name != "-" else "<stdin>")
            if not d and not g:
                g = [Diagnostic(SourceRef(name if name != "-" else "<stdin>"), "holds no objects.", error=False)]
            docs.extend(d)
            diags.extend(g)
    return docs, diags, files
