"""trainlab: train, evaluate and tune neural networks from one config (public API)."""

import importlib
import sys
import types

from .errors import ConfigError, DataError, DiskFull, DivergedError, Interrupted, Terminated, TrainlabError  # noqa: F401

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first use: the CLI (cli.py lives in this
# package, so importing it runs this file first) must answer `--help` without importing torch
# (2-3 s). `import trainlab` stays cheap; `trainlab.train(...)` imports what training needs.
_PUBLIC = {
    "train": "train", "train_step": "train", "Result": "train",
    "evaluate": "evaluate", "predict": "predict", "cross_validate": "crossval", "lr_find": "lrfind",
    "compare": "compare", "sweep_size": "compare", "search": "search", "check": "check",
    "generate": "generate", "explain": "explain", "export": "export", "pretrain": "pretrain",
    "Config": "config", "load_config": "config",
}

__all__ = [*_PUBLIC, "TrainlabError", "ConfigError", "DiskFull", "DataError", "DivergedError", "Interrupted", "Terminated",
           "__version__"]


def _public(name: str):
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = _public(name)
        if name not in _SHADOWED:
            globals()[name] = value  # found in the module's namespace from now on
        return value
    raise AttributeError(f"module 'trainlab' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


# Ten public functions share their name with the submodule that defines them (trainlab.train is
# the function and trainlab/train.py its module). When such a submodule first loads, the import
# system sets it as an attribute of this package, which would hide the function. Python lets a
# package's module object have its own class (the language reference, "Customizing module attribute
# access"): on this one those ten names are properties, so they always give the function, and the
# import system's assignment of the submodule is dropped.
_SHADOWED = ("train", "evaluate", "predict", "compare", "search", "check", "generate", "explain", "export",
             "pretrain")


def _shadowed_property(name: str) -> property:
    def set_attribute(module, value):
        if not isinstance(value, types.ModuleType):
            raise AttributeError(f"trainlab.{name} is trainlab's public function and cannot be replaced")

    return property(lambda module: _public(name), set_attribute, doc=f"trainlab.{name} (imported on first use)")


class _Package(types.ModuleType):
    """trainlab's module type: the public functions named like their submodules are properties."""


for _name in _SHADOWED:
    setattr(_Package, _name, _shadowed_property(_name))
sys.modules[__name__].__class__ = _Package
