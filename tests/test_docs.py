"""The README and the documentation site (docs/, built by `mkdocs build --strict` in CI).

- every results page names a command a reader can run (`simulate ...`, `train ...`,
  `evaluate ...` or `python benchmarks/...`), and every such command names a real subcommand or
  an existing benchmark script;
- README.md stays short, keeps the test command CI runs, and links only to docs pages that exist;
- the CLI hook (docs/hooks.py) renders every subcommand of the three parsers.
"""
from __future__ import annotations

import importlib.util
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PROGRAMS = ("simulate", "train", "evaluate")
COMMAND = re.compile(r"^(?:(simulate|train|evaluate) ([a-z][a-z-]*)\b|python (benchmarks/[\w/]+\.py)\b)")


def _hooks():
    spec = importlib.util.spec_from_file_location("grapheneseg_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commands(text: str) -> list[str]:
    """Shell commands a page shows: lines starting with `$ `, and lines of ```bash blocks."""
    found, in_bash = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_bash = not in_bash and stripped[3:].strip() in ("bash", "sh", "console", "shell")
            continue
        if stripped.startswith("$ "):
            found.append(stripped[2:].strip())
        elif in_bash and stripped and not stripped.startswith("#"):
            found.append(stripped.removeprefix("$ ").strip())
    # environment assignments in front of a command (OMP_NUM_THREADS=2 python ...)
    return [re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", c) for c in found]


RESULTS = sorted((DOCS / "results").glob("*.md"))


def test_results_pages_exist():
    names = {p.stem for p in RESULTS}
    assert {"simulation", "comparison", "fine-tuning", "atoms", "uncertainty", "speed"} <= names


@pytest.mark.parametrize("page", RESULTS, ids=lambda p: p.name)
def test_results_page_names_a_runnable_command(page):
    runnable = [c for c in commands(page.read_text(encoding="utf-8")) if COMMAND.match(c)]
    assert runnable, f"{page.relative_to(ROOT)} names no `simulate/train/evaluate ...` or `python benchmarks/...` command"


@pytest.fixture(scope="module")
def subcommand_names():
    hooks = _hooks()
    return {prog: set(hooks.subcommands(hooks.parser_for(prog))) for prog in PROGRAMS}


def _doc_files():
    return sorted(DOCS.rglob("*.md")) + [README]


@pytest.mark.parametrize("page", _doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_in_docs_exist(page, subcommand_names):
    """A `simulate X` / `train X` / `evaluate X` shown in a code block is a real subcommand, and a
    `python benchmarks/NAME.py` an existing script."""
    for command in commands(page.read_text(encoding="utf-8")):
        m = COMMAND.match(command)
        if not m:
            continue
        if m.group(3):
            assert (ROOT / m.group(3)).is_file(), f"{page.name}: no such script: {m.group(3)}"
        else:
            assert m.group(2) in subcommand_names[m.group(1)], f"{page.name}: no such command: {m.group(1)} {m.group(2)}"


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n < 250, f"README.md has {n} lines; the details belong in docs/"


def test_readme_links_to_docs_exist():
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]*)(?:#[^)]*)?\)", text)
    assert links, "README.md links to no docs page"
    missing = sorted({link for link in links if not (ROOT / link).exists()})
    assert not missing, f"README.md links to missing docs files: {missing}"


def _slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    text = unicodedata.normalize("NFKD", re.sub(r"[`*]", "", heading)).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_readme_anchors_exist():
    text = README.read_text(encoding="utf-8")
    for link, anchor in re.findall(r"\]\((docs/[^)#\s]*)#([^)]*)\)", text):
        headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", (ROOT / link).read_text(encoding="utf-8"), re.M)
        assert anchor in {_slug(h) for h in headings}, f"README.md links to {link}#{anchor}, no such heading"


def test_readme_keeps_the_ci_test_command():
    """.ci/run runs the README's test command verbatim."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    test_lines = [line.strip() for line in ci if "python -m pytest -q" in line]
    assert test_lines, ".ci/run runs no `python -m pytest -q`"
    readme = README.read_text(encoding="utf-8")
    for line in test_lines:
        assert line in readme, f"README.md lacks the test command .ci/run runs: {line}"


def test_cli_hook_renders_every_subcommand():
    hooks = _hooks()
    for prog in PROGRAMS:
        parser = hooks.parser_for(prog)
        subs = hooks.subcommands(parser)
        assert subs, f"{prog} has no subcommands"
        text = hooks.render(prog)
        for name, sub in subs.items():
            assert f"## `{prog} {name}`" in text, f"{prog} {name} missing from the rendered reference"
            assert f"usage: {prog} {name}" in text
            for action in sub._actions:
                for option in action.option_strings:
                    assert option in text, f"{prog} {name} {option} missing from the rendered reference"


def test_cli_hook_replaces_markers():
    hooks = _hooks()
    page = "# x\n\n<!-- cli: train -->\n"
    out = hooks.on_page_markdown(page)
    assert "<!-- cli:" not in out and "## `train real`" in out
    for prog in PROGRAMS:
        assert f"<!-- cli: {prog} -->" in (DOCS / "reference" / f"cli-{prog}.md").read_text(encoding="utf-8")


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    missing = [p for p in pages if p not in nav]
    assert not missing, f"docs pages not in mkdocs.yml nav: {missing}"


IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
# pages that must show what their commands make: a results page's figures, getting-started's outputs
# (speed.md is timings: tables, no figure)
FIGURE_PAGES = [DOCS / "getting-started.md", DOCS / "how-to" / "napari.md"] + [
    p for p in RESULTS if p.name != "speed.md"]


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_image_a_page_shows_exists(page):
    for target in IMAGE.findall(page.read_text(encoding="utf-8")):
        assert (page.parent / target).resolve().is_file(), f"{page.relative_to(ROOT)} shows a missing image {target}"


@pytest.mark.parametrize("page", FIGURE_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_pages_show_figures(page):
    assert IMAGE.findall(page.read_text(encoding="utf-8")), f"{page.relative_to(ROOT)} shows no figure"


def _prose_lines(text: str):
    in_code = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            in_code = not in_code
        elif not in_code:
            yield number, line


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=lambda p: str(p.relative_to(DOCS)))
def test_no_accidental_headings(page):
    """A prose line starting with '#' but no space (e.g. a wrapped '#3 of 5') renders as a heading."""
    bad = [n for n, line in _prose_lines(page.read_text(encoding="utf-8")) if re.match(r"#+[^#\s]", line)]
    assert not bad, f"{page.relative_to(ROOT)} lines {bad} start with '#' and would render as headings"


USER_PAGES = [DOCS / "getting-started.md", DOCS / "index.md"] + sorted((DOCS / "how-to").glob("*.md"))


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_user_commands_parse(page, subcommand_names):
    """Every `simulate|train|evaluate ...` line of the getting-started and how-to pages is accepted by
    the real parser (a renamed or removed flag in a page fails here)."""
    import shlex

    hooks = _hooks()
    for command in commands(page.read_text(encoding="utf-8")):
        command = command.split(" #")[0].strip()
        words = shlex.split(command.split("|")[0])
        if not words or words[0] not in PROGRAMS or "..." in command or "<" in command:
            continue
        try:
            hooks.parser_for(words[0]).parse_args(words[1:])
        except SystemExit as exit_:
            pytest.fail(f"{page.relative_to(ROOT)}: `{command}` is refused by the parser (exit {exit_.code})")


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_user_pages_tell_no_development_history(page):
    """How-to and getting-started pages speak to users: no issues, sessions, test files or paths of a
    development checkout (the changelog and results pages keep the history)."""
    text = page.read_text(encoding="utf-8")
    for pattern in (r"\bissue \d+", r"\b(?:this|other|previous|last|earlier) sessions?\b", r"sessions' jobs",
                    r"tests/\S+\.py", r"\.\./shared/"):
        found = re.findall(pattern, text, flags=re.I)
        assert not found, f"{page.relative_to(ROOT)} mentions {found[:3]}"


def test_figures_have_one_source():
    """{{ fig.KEY }} on a page names a key of docs/figures.yaml (and the hook puts its value in);
    README.md and --help texts, which no hook renders, hold each value they are listed for."""
    hooks = _hooks()
    known = hooks.figures()
    for page in DOCS.rglob("*.md"):
        for key in hooks.FIGURE.findall(page.read_text(encoding="utf-8")):
            assert key in known, f"{page.relative_to(ROOT)}: {{{{ fig.{key} }}}} is not in docs/figures.yaml"
    assert "4 min 21 s" not in hooks.put_figures("{{ fig.packaged_jaccard }}")
    assert hooks.put_figures("about {{ fig.sim_5000_wall }}.") == f"about {known['sim_5000_wall']['value']}."
    with pytest.raises(KeyError):
        hooks.put_figures("{{ fig.no_such_figure }}")
    for key, figure in known.items():
        for name in figure["quoted_in"]:
            assert str(figure["value"]) in (ROOT / name).read_text(encoding="utf-8"), \
                f"{name} does not quote {key} = {figure['value']} (docs/figures.yaml)"
