"""Reading and writing a config: YAML files, dotted overrides, validation with "did you mean" errors."""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .optim import OPTIM_KEYS, OptimConfig
from .schema import Config
from .values import check_size, short


def set_dotted(tree: dict, key: str, value: Any) -> None:
    if not isinstance(key, str):
        raise ConfigError(f"Override key {key!r} must be a dotted string such as 'optim.lr'.")
    parts = key.split(".")
    if not all(p.strip() for p in parts):
        raise ConfigError(f"Override key {short(key)} has an empty part: write dotted keys such as 'optim.lr'.")
    node = tree
    for i, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[:i + 1])
        if prefix in KNOWN_KEYS and prefix not in MAPPING_KEYS:
            raise ConfigError(f"Override {short(key)}: '{prefix}' is a value, not a section (it has no key "
                              f"{short(parts[i + 1])}). Set it with {prefix}=VALUE.")
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"Override {short(key)}: '{prefix}' is a value, not a section.")
        node = child
    node[parts[-1]] = value


def _known_keys(model: type[BaseModel] = Config, prefix: str = "", mappings: bool = False) -> list[str]:
    """Every dotted key (sections and values); `mappings`: only those holding keys of their own
    (sections, and dict values such as model.kwargs)."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = prefix + name
        ann = field.annotation
        section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if not mappings or section or getattr(ann, "__origin__", ann) is dict:
            keys.append(dotted)
        if section:
            keys += _known_keys(ann, dotted + ".", mappings)
    return keys


KNOWN_KEYS = _known_keys()
MAPPING_KEYS = set(_known_keys(mappings=True))

def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=0.05' -> ('optim.lr', 0.05); the value is read as YAML ('[256,128]' is a list)."""
    key, eq, raw = text.partition("=")
    if not eq:
        raise ConfigError(f"Override {short(text)} must look like key=value, e.g. optim.lr=0.05.")
    if not key.strip():
        raise ConfigError(f"Override {short(text)}: the key is empty. Write key=value, e.g. optim.lr=0.05.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise ConfigError(f"Override {short(key.strip())}: the value is nested too deeply to read.") from None
    return key.strip(), value


def _explain(err: ValidationError, raw: dict) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if len(loc) > 120:  # a key pasted by mistake (a whole file as a key): its beginning names it
            loc = loc[:100] + f"... ({len(loc)} characters)"
        value = e.get("input")
        if e["type"] == "extra_forbidden" and not all(str(part).strip() for part in e["loc"]):
            lines.append(f"A config key is empty ({loc!r}): every key and section needs a name, e.g. optim.lr.")
        elif e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc, KNOWN_KEYS, n=1, cutoff=0.6) or \
                difflib.get_close_matches(loc.lower(), KNOWN_KEYS, n=1, cutoff=0.6)  # DATA.NAME: data.name
            if not close:  # a misspelt section name or key: match on the last part
                last = loc.split(".")[-1]
                same_section = [k for k in KNOWN_KEYS if k.rsplit(".", 1)[0] == loc.rsplit(".", 1)[0]]
                close = difflib.get_close_matches(last, [k.split(".")[-1] for k in same_section], n=1)
                close = [loc.rsplit(".", 1)[0] + "." + close[0]] if close and "." in loc else close
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"Unknown config key '{loc}'.{hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "model_type":
                msg = "it is a section: give a mapping of its keys (or set them one by one, as dotted keys)"
            if loc:
                lines.append(f"Config key '{loc}' = {short(value)} is not allowed: {msg}.")
            else:  # a check across keys: the message names them
                lines.append(f"The config is not allowed: {msg}.")
    lines.append("See the config reference (docs/config.md; `make docs` builds the site) for every key, "
                 "its type, default, allowed values and meaning.")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Read a YAML config, apply dotted overrides, validate.

    >>> cfg = load_config("examples/seed_mlp.yaml", ["optim.lr=0.05", "train.epochs=5"])
    """
    raw: dict = {}
    name = "run"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file '{path}' does not exist. Give a YAML file, e.g. examples/seed_mlp.yaml.")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file '{path}' is not valid YAML: {e}") from None
        except RecursionError:
            raise ConfigError(f"Config file '{path}' is nested too deeply to read.") from None
        except (UnicodeDecodeError, OSError) as e:
            raise ConfigError(f"Config file '{path}' cannot be read as text ({e}).") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"Config file '{path}' must hold a mapping of sections (data, model, ...).")
        name = path.stem
    raw.setdefault("name", name)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in items:
        check_size(value, key if isinstance(key, str) else repr(key))
        set_dotted(raw, key, value)
    return build_config(raw)


def build_config(raw: dict) -> Config:
    """Validate a plain dict into a Config, with the errors users can read."""
    check_size(raw)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, raw)) from None
    _warn_unused_optim_keys(cfg, raw.get("optim") or {})
    return cfg


def _warn_unused_optim_keys(cfg: Config, raw_optim: dict) -> None:
    used = OPTIM_KEYS[cfg.optim.name]
    defaults = OptimConfig()
    ignored = [k for k, v in raw_optim.items() if k not in ("name", "lr") and k not in used
               and k in OptimConfig.model_fields and getattr(cfg.optim, k) != getattr(defaults, k)]
    if ignored:
        warnings.warn(
            f"optim.name={cfg.optim.name} does not use {', '.join('optim.' + k for k in ignored)}; "
            "ignored.", stacklevel=3)


def save_config(cfg: Config, path: Path) -> None:
    from ..runs import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
