"""What a config value may be, whatever its key: integers that fit 64 bits, plain YAML data, a size
that can be walked and printed. The config sections and loaders call these."""

from __future__ import annotations

import reprlib
from typing import Any

from ..errors import ConfigError

INT_LIMIT = 2**63  # every integer key fits in 64 bits: torch and numpy take them as int64


def too_large(value: Any) -> bool:
    """Whether `value` is, or holds, an integer outside 64 bits."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) >= INT_LIMIT
    if isinstance(value, (list, tuple)):
        return any(too_large(v) for v in value)
    if isinstance(value, dict):
        return any(too_large(v) for v in value.values())
    return False


def plain_data(value: Any) -> None:
    """ValueError unless `value` is YAML's plain data (what config.yaml writes and reads back the same):
    text, finite numbers, booleans, null, lists, and mappings with text keys."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"holds {value}, which config.yaml cannot keep")
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            plain_data(v)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"has the key {k!r}: keys must be text")
            plain_data(v)
        return
    raise ValueError(f"holds a {type(value).__name__} ({reprlib.repr(value)}): use text, numbers, booleans, null, "
                     "lists and mappings")


_REPR = reprlib.Repr()  # error messages show a value's beginning, never a megabyte of it
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxlevel = 80, 80, 8, 8, 6, 3


def short(value: Any) -> str:
    return _REPR.repr(value)


MAX_VALUES = 100_000  # a config holds a few hundred values; more is a mistake (or a YAML alias bomb)
MAX_DEPTH = 32


def check_size(tree: Any, key: str = "") -> None:
    """ConfigError naming the key when a config (or the value of dotted `key`) is cyclic (a YAML alias
    of itself), nested more than MAX_DEPTH deep or holds more than MAX_VALUES values once aliases are
    expanded: nothing then walks or prints it whole."""
    count = 0
    stack = [(tree, key, 0, ())]
    while stack:
        node, name, depth, path = stack.pop()
        count += 1
        what = f"Config key {short(name)}" if name else "The config"
        if count > MAX_VALUES:
            raise ConfigError(f"{what} holds more than {MAX_VALUES:,} values (YAML aliases expanded). A config "
                              "needs a few hundred: check that key.")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what} is nested more than {MAX_DEPTH} levels deep.")
        if isinstance(node, (dict, list, tuple)):
            if id(node) in path:
                raise ConfigError(f"{what} contains itself (a YAML alias of a value inside it).")
            inner = (*path, id(node))
            if isinstance(node, dict):  # keys extend the dotted name; list items keep their list's
                stack += [(v, f"{name}.{k}" if name else str(k), depth + 1, inner) for k, v in node.items()]
            else:
                stack += [(v, name, depth + 1, inner) for v in node]
