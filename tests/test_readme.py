"""README.md stays a newcomer's page: short, the two make commands, the Chinese quick start, every
command at a glance, and links into docs/ that resolve. (The reference, and the checks that it
matches the code, are docs/ and tests/test_docs.py; the README's commands run there too.)"""

import re
from pathlib import Path

import pytest

from trainlab import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 250


@pytest.fixture(scope="module")
def text() -> str:
    return README.read_text(encoding="utf-8")


def _section(text: str, title: str) -> str:
    """The body of the '## title' section, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}[ \t]*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def test_is_short_enough_for_a_newcomer(text):
    assert len(text.splitlines()) <= MAX_LINES, "README.md is for newcomers: the reference goes into docs/"


def test_shows_the_make_commands(text):
    assert "make demo" in text
    assert "make test" in text
    assert "make docs" in text
    assert "torch==2.13.0" in text


def test_chinese_quick_start_exists(text):
    body = _section(text, "快速上手")
    assert re.search(r"[\u4e00-\u9fff]", body), "the quick-start section has no Chinese text"
    assert "examples/seed_mlp.yaml" in body


def test_commands_at_a_glance_name_every_command(text):
    body = _section(text, "Commands at a glance")
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    missing = [c for c in commands if f"`trainlab {c} " not in body]
    assert not missing, f"README's commands at a glance lack: {missing}"


def test_measured_results_are_dated(text):
    body = _section(text, "Measured results")
    assert re.search(r"\b20\d\d-\d\d-\d\d\b", body) and "docs/benchmarks.md" in body


def test_links_into_docs_resolve(text):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"\w+://", link)]
    assert any(link.startswith("docs/") for link in local), "README.md links into docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
    for page in ("commands", "config", "run-directory", "python-api", "benchmarks"):
        assert f"docs/{page}.md" in text
