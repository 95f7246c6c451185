"""README.md stays true to the code: every config key documented, with its real default."""

import re
from pathlib import Path

import pytest
import yaml

from trainlab.config import KNOWN_KEYS, Config

README = Path(__file__).resolve().parents[1] / "README.md"
LEAF_KEYS = [k for k in KNOWN_KEYS if not any(other.startswith(k + ".") for other in KNOWN_KEYS)]
NONE_WORDS = {"none", "null", "~", ""}


@pytest.fixture(scope="module")
def text() -> str:
    return README.read_text(encoding="utf-8")


def _section(text: str, title: str) -> str:
    """The body of the '## title' section, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}[ \t]*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def _cells(line: str) -> list[str]:
    """Cells of a markdown table row; '\\|' is a literal pipe inside a cell."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def _table_rows(section: str) -> list[dict]:
    """Every row of every table whose header has 'key' and 'default' columns."""
    rows, header = [], None
    for line in section.splitlines():
        if not line.strip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells if c):
            continue  # the |---|---| separator
        if "key" in header and "default" in header and len(cells) == len(header):
            rows.append(dict(zip(header, cells)))
    return rows


def _unquote(cell: str) -> str:
    cell = cell.strip()
    if len(cell) >= 2 and cell.startswith("`") and cell.endswith("`"):
        cell = cell[1:-1]
    return cell.strip()


def _parse_default(cell: str):
    raw = _unquote(cell)
    if raw.lower() in NONE_WORDS:
        return None
    return yaml.safe_load(raw)


def _real_default(key: str):
    value = Config()
    for part in key.split("."):
        value = getattr(value, part)
    return _normalise(value)


def _normalise(value):
    if isinstance(value, (tuple, list)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def documented(text) -> dict[str, str]:
    rows = _table_rows(_section(text, "Config reference"))
    found = {}
    for row in rows:
        key = _unquote(row["key"])
        assert key not in found, f"config key {key} is documented twice"
        found[key] = row["default"]
    return found


def test_every_leaf_key_appears_in_backticks(text):
    missing = [k for k in LEAF_KEYS if f"`{k}`" not in text]
    assert not missing, f"README.md does not mention these config keys: {missing}"


def test_every_leaf_key_has_a_row_in_the_config_reference(documented):
    missing = [k for k in LEAF_KEYS if k not in documented]
    assert not missing, f"config reference tables lack rows for: {missing}"
    unknown = [k for k in documented if k not in KNOWN_KEYS]
    assert not unknown, f"config reference documents keys the config does not have: {unknown}"


def test_documented_defaults_are_the_real_ones(documented):
    wrong = []
    for key, cell in documented.items():
        if key not in LEAF_KEYS:
            continue
        try:
            shown = _normalise(_parse_default(cell))
        except yaml.YAMLError:
            wrong.append(f"{key}: default cell {cell!r} is not a YAML value")
            continue
        real = _real_default(key)
        same = shown == real and (type(shown) is bool) == (type(real) is bool)
        if not same:
            wrong.append(f"{key}: README says {cell!r}, config.py has {real!r}")
    assert not wrong, "\n".join(wrong)


def test_default_parser_handles_the_usual_forms():
    assert _parse_default("`None`") is None
    assert _parse_default("`[0.9, 0.999]`") == [0.9, 0.999]
    assert _parse_default(" `false` ") is False
    assert _parse_default("`fashion-mnist`") == "fashion-mnist"
    assert _cells("| `regularize.l1` | `0.0` | adds `l1 × Σ\\|w\\|` |") == \
        ["`regularize.l1`", "`0.0`", "adds `l1 × Σ|w|`"]


def test_shows_the_two_make_commands(text):
    assert "make demo" in text
    assert "make test" in text


def test_chinese_quick_start_exists(text):
    body = _section(text, "快速上手")
    assert re.search(r"[\u4e00-\u9fff]", body), "the quick-start section has no Chinese text"
    assert "examples/seed_mlp.yaml" in body
