"""The engine tables (README, docs/engines.md, lstmkit/engines/__init__.py) against the engines'
own declarations: every registered engine listed, no other, priorities and resets as declared."""

from __future__ import annotations

import re
from pathlib import Path

import lstmkit.engines as engines_pkg
from lstmkit.engines import ENGINES

ROOT = Path(__file__).resolve().parents[1]


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The rows of the first markdown table after `heading`."""
    section = text[text.index(heading) :]
    rows, started = [], False
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set(cells[0]) <= set("-: "):
                rows.append(cells)
        elif started:
            break
    return rows[1:]  # without the header


def _names(rows: list[list[str]]) -> set[str]:
    return {re.sub(r'[`"]', "", r[0]) for r in rows}


def test_the_readme_table_lists_every_engine() -> None:
    rows = _table_rows((ROOT / "README.md").read_text(), "## Engines")
    assert _names(rows) == set(ENGINES)


def test_the_docs_table_lists_every_engine_with_its_priority() -> None:
    rows = _table_rows((ROOT / "docs" / "engines.md").read_text(), "# Engines")
    assert _names(rows) == set(ENGINES)
    for row in rows:
        name = re.sub(r'[`"]', "", row[0])
        assert int(row[1]) == ENGINES[name].priority, f"docs/engines.md: priority of {name}"


def _engines_named(doc: str, sentence: str) -> set[str]:
    """The engines a sentence of the docstring lists: 'SENTENCE a, b and c.'"""
    said = re.search(re.escape(sentence) + r" ([\w ,]+?)\.", doc).group(1)
    return set(re.split(r",\s*|\s+and\s+", said))


def test_the_package_docstring_lists_every_engine_and_who_has_resets() -> None:
    doc = engines_pkg.__doc__
    listed = set(re.findall(r'^\| "(\w+)"', doc, re.M))
    assert listed == set(ENGINES)
    named = _engines_named(doc, "Per-sample resets run on")
    assert named == {n for n, e in ENGINES.items() if e.supports_resets}
    named = _engines_named(doc, "Interventions (lstmkit.intervene) run on")
    assert named == {n for n, e in ENGINES.items() if e.supports_interventions}
