"""Where a finding is, as SARIF artifact locations GitHub code scanning can place in the repository.

Files are given relative to the source root (``--source-root``, default the working directory) with
``uriBaseId: %SRCROOT%``; a file outside the root keeps an absolute ``file://`` URI. An object read from
``helm template`` output is placed in the chart file its ``# Source:`` comment names: Helm writes
``CHART/templates/x.yaml``, and ``CHART`` is the chart's folder (``--chart-dir``, else the folder under the
root whose ``Chart.yaml`` has that name). Standard input without such a comment becomes ``stdin`` under
``%SRCROOT%`` like every other relative path, a valid relative URI, never ``<stdin>``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

from ..model.finding import SourceRef

SRCROOT = "%SRCROOT%"
STDIN_URI = "stdin"
_CHART_NAME = re.compile(r"^name:\s*['\"]?([^'\"#\s]+)", re.MULTILINE)
_SKIP_DIRS = {"node_modules", "vendor", "__pycache__"}
CHART_SEARCH_DEPTH = 4


class SourceRoot:
    """Turns the sources of findings into SARIF ``artifactLocation`` objects."""

    def __init__(self, root: str | os.PathLike | None = None, chart_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(os.path.abspath(root or os.getcwd()))
        self.chart_dir = Path(os.path.abspath(chart_dir)) if chart_dir else None
        self._charts: dict[str, Path] | None = None

    def base_ids(self) -> dict:
        """``run.originalUriBaseIds``: where ``%SRCROOT%`` is (an absolute URI ending in a slash)."""
        uri = self.root.as_uri()
        return {SRCROOT: {"uri": uri if uri.endswith("/") else uri + "/"}}

    def artifact(self, source: SourceRef | None) -> dict:
        if source is None or (source.file == "<stdin>" and not source.template):
            return {"uri": STDIN_URI, "uriBaseId": SRCROOT}  # relative, as every path under the root is
        if source.template:
            return self._location(self._template_path(source.template))
        return self._location(Path(os.path.abspath(source.file)))

    def line(self, source: SourceRef | None) -> int:
        """The line to point at: a rendered template's lines are not the chart file's, so its first one."""
        if source is None or source.template or not source.line:
            return 1
        return source.line

    def _location(self, path: Path) -> dict:
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return {"uri": path.as_uri()}  # outside the root: absolute, placed by no repository
        return {"uri": quote(rel.as_posix(), safe="/"), "uriBaseId": SRCROOT}

    def _template_path(self, template: str) -> Path:
        name, _, rest = template.replace("\\", "/").partition("/")
        chart = self.chart_dir or self.charts().get(name)
        if chart is not None and rest:
            return chart / rest
        return self.root / template

    def charts(self) -> dict[str, Path]:
        """Chart name -> folder, for every ``Chart.yaml`` a few levels under the root (first found wins)."""
        if self._charts is None:
            found: dict[str, Path] = {}
            for folder, dirs, files in os.walk(self.root):
                depth = len(Path(folder).relative_to(self.root).parts)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                                 and depth < CHART_SEARCH_DEPTH)
                if "Chart.yaml" in files:
                    try:
                        text = Path(folder, "Chart.yaml").read_text(encoding="utf-8", errors="replace")
                    except OSError:
                        continue
                    m = _CHART_NAME.search(text)
                    if m:
                        found.setdefault(m.group(1), Path(folder))
            self._charts = found
        return self._charts
