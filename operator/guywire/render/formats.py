"""Every output format of every command, in one registry.

The command line takes each ``--format``'s choices, default and help from :data:`FORMATS` and renders
through :meth:`Format.render`; ``tests/unit/test_golden.py`` pins one output per entry in ``tests/golden/``.
A new format is one :class:`Format` here plus its golden file (``UPDATE_GOLDEN=1 pytest
tests/unit/test_golden.py`` writes it).

A format names its renderer by module and function, imported only when it is used, so building the
parser imports no renderer (most of a short run's start-up), and ``cli.warm_up`` can import the one
chosen while a second process parses large inputs.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MERGE_JSON = "json"


@dataclass(frozen=True)
class Format:
    """One ``--format`` of one command."""

    command: str
    name: str
    module: str  # relative to the guywire package, as importlib takes it: ".render.machine"
    function: str
    extension: str  # of a saved output (and of its golden file)
    help: str = ""  # one clause in the command's --format help, after "NAME: "
    # Keyword arguments the renderer takes from what the command has (render_text's colour, the SARIF
    # locations, the clock of the PolicyReports, the --rps of a simulation, the changes of report --diff).
    options: tuple[str, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)  # keyword arguments this format always passes
    # For the commands that render each cluster apart (graph, report), how several clusters are written:
    # MERGE_JSON, one {"clusters": [{"cluster": NAME, ...}]} document; any other text, the line comment
    # that heads each cluster's section; None, the format shows one cluster only.
    sections: str | None = None

    def renderer(self) -> Callable[..., str]:
        return getattr(importlib.import_module(self.module, "guywire"), self.function)

    def render(self, *subject: Any, **available: Any) -> str:
        """``subject`` rendered, with the keyword arguments this format takes picked out of ``available``."""
        return self.renderer()(*subject, **{name: available[name] for name in self.options}, **self.fixed)


def _formats(*formats: Format) -> dict[str, dict[str, Format]]:
    out: dict[str, dict[str, Format]] = {}
    for f in formats:
        if f.name in out.setdefault(f.command, {}):
            raise ValueError(f"format {f.command} --format {f.name} is registered twice.")
        out[f.command][f.name] = f
    return out


FORMATS: dict[str, dict[str, Format]] = _formats(
    Format("check", "text", ".render.text", "render_text", "txt", options=("colour",)),
    Format("check", "json", ".render.machine", "render_json", "json"),
    Format("check", "sarif", ".render.machine", "render_sarif", "sarif", options=("locations",)),
    Format("check", "junit", ".render.machine", "render_junit", "xml"),
    Format("check", "policyreport", ".render.machine", "render_policyreports", "yaml",
           "wgpolicyk8s.io/v1alpha2 PolicyReports per namespace (multi-document YAML)",
           options=("clock",), fixed={"api": "wgpolicyk8s"}),
    Format("check", "openreports", ".render.machine", "render_policyreports", "yaml",
           "the same as openreports.io/v1alpha1 Reports (Kyverno 1.15, Policy Reporter 3)",
           options=("clock",), fixed={"api": "openreports"}),

    Format("simulate", "text", ".render.simulation", "render_simulation_text", "txt", options=("rps",)),
    Format("simulate", "json", ".render.simulation", "render_simulation_json", "json", options=("rps",)),
    Format("simulate", "html", ".render.simulation", "render_simulation_html", "html",
           "one self-contained page with the graph coloured hop by hop", options=("rps",)),

    Format("report", "text", ".render.complexity_report", "render_report_text", "txt", options=("changes",), sections="#"),
    Format("report", "json", ".render.complexity_report", "render_report_json", "json", options=("changes",),
           sections=MERGE_JSON),

    Format("graph", "text", ".render.graph_formats", "render_graph_text", "txt", sections="#"),
    Format("graph", "dot", ".render.graph_formats", "render_dot", "dot", sections="//"),
    Format("graph", "mermaid", ".render.graph_formats", "render_mermaid", "mmd", sections="%%"),
    Format("graph", "json", ".render.graph_formats", "render_graph_json", "json", sections=MERGE_JSON),
    Format("graph", "html", ".render.html", "render_html", "html",
           "one self-contained page (inline SVG, no network) with findings on hover"),

    Format("rules", "text", ".render.rule_catalogue", "rules_text", "txt"),
    Format("rules", "json", ".render.rule_catalogue", "rules_json", "json"),
    Format("rules", "markdown", ".render.rule_catalogue", "rules_markdown", "md"),
)




def choices(command: str) -> list[str]:
    """The names argparse offers for ``command --format``, the default first."""
    return list(FORMATS[command])


def help_of(command: str) -> str | None:
    """The ``--format`` help: each format that needs a word, as ``NAME: what it is``, joined by semicolons."""
    parts = [f"{f.name}: {f.help}" for f in FORMATS[command].values() if f.help]
    return "; ".join(parts) or None


def add_format_argument(parser, command: str) -> None:
    """``--format``/``-o`` with ``command``'s formats as choices; the first registered is the default."""
    names = choices(command)
    parser.add_argument("--format", "-o", choices=names, default=names[0], help=help_of(command))
