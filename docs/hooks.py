"""MkDocs hook: the CLI reference pages are generated from the argparse parsers, and figures quoted
on several pages come from one file.

A page holding the marker `<!-- cli: evaluate -->` gets, in its place, the `--help` text of the
program and of each of its subcommands, taken from `evaluate.cli.build_parser()` (likewise
`simulate`, `train`) at build time, so the reference can never drift from the code. `{{ fig.KEY }}`
is replaced by the value of KEY in docs/figures.yaml, so one measured figure cannot read
differently on two pages.
Registered in mkdocs.yml under `hooks:`; tests/test_docs.py calls `render` directly.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ("simulate", "train", "evaluate")
MARKER = re.compile(r"<!--\s*cli:\s*([a-z_]+)\s*-->")
FIGURE = re.compile(r"\{\{\s*fig\.([a-z0-9_]+)\s*\}\}")
WIDTH = "100"  # help text wrapped at 100 columns whatever the terminal


def parser_for(program: str) -> argparse.ArgumentParser:
    """`<program>.cli.build_parser()`, imported from this checkout."""
    if program not in PROGRAMS:
        raise ValueError(f"unknown program {program!r}; expected one of {PROGRAMS}")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"{program}.cli").build_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of `parser`, in the order they were added."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if sub not in found.values():  # aliases map to the same parser
                    found[name] = sub
    return found


def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return parser.format_help().rstrip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def render(program: str) -> str:
    """Markdown: the program's help, then one section per subcommand (nested ones included)."""
    parser = parser_for(program)
    parts = [f"## `{program}`", "", "```text", _help(parser), "```", ""]

    def walk(prefix: str, p: argparse.ArgumentParser) -> None:
        for name, sub in subcommands(p).items():
            full = f"{prefix} {name}"
            parts.extend([f"## `{full}`", "", "```text", _help(sub), "```", ""])
            walk(full, sub)

    walk(program, parser)
    return "\n".join(parts)


def figures() -> dict[str, dict]:
    """docs/figures.yaml: {key: {value, measured_by, quoted_in}}."""
    import yaml

    return yaml.safe_load((ROOT / "docs" / "figures.yaml").read_text(encoding="utf-8"))


def put_figures(markdown: str) -> str:
    """`{{ fig.KEY }}` -> the figure's value; an unknown key is an error (a strict build fails)."""
    known = figures()

    def value(m: re.Match) -> str:
        if m.group(1) not in known:
            raise KeyError(f"{{{{ fig.{m.group(1)} }}}}: no such key in docs/figures.yaml")
        return str(known[m.group(1)]["value"])

    return FIGURE.sub(value, markdown)


def on_page_markdown(markdown: str, page=None, config=None, files=None, **kwargs) -> str:
    return put_figures(MARKER.sub(lambda m: render(m.group(1)), markdown))
