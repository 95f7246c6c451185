"""Generated config inputs (Hypothesis): random dotted overrides and config files through
load_config and through `trainlab check` in-process. Exit 0 or 2 only, never a traceback, and
every error names a key.

CI budget (measured on a quiet 2-core machine, OMP_NUM_THREADS=1): about 15 s for the whole file.
Each run tries 1,000 override lists through load_config, 300 whole config files, and 60 override
lists through `trainlab check` (which builds the data and model and times a training step), all
derandomized (the same cases every run) with no example database. Every case runs under a time
limit, so a hang fails the test instead of stalling CI.
"""

from __future__ import annotations

import contextlib
import io
import string
import typing
import warnings

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings, strategies as st
from pydantic import BaseModel

from trainlab.config import KNOWN_KEYS, Config, build_config, load_config
from trainlab.errors import ConfigError

from conftest import time_limit

SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------- the keys, from the pydantic models

def _leaves(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, typing.Any]:
    """Every value key (not a section) with its pydantic FieldInfo (annotation and bounds)."""
    out = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_leaves(ann, f"{prefix}{name}."))
        else:
            out[prefix + name] = field
    return out


FIELDS = _leaves()
LEAVES = {k: f.annotation for k, f in FIELDS.items()}
SECTIONS = sorted(set(KNOWN_KEYS) - set(LEAVES))


def test_the_generator_knows_every_key():
    assert len(LEAVES) > 70 and {"optim.lr", "model.hidden", "train.early_stopping.patience"} <= set(LEAVES)
    assert set(LEAVES) | set(SECTIONS) == set(KNOWN_KEYS)


# ---------------------------------------------------------------- values of every YAML type

EXTREME_INTS = [0, 1, -1, 2, 7, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, -2**63, 2**64, 10**30]
EXTREME_FLOATS = [0.0, -0.0, 1e-300, 5e-324, 1e300, -1e300, 0.5, 0.999999, 1.0, float("inf"), float("-inf"),
                  float("nan")]
YAML_TOKENS = ["~", "null", "yes", "no", "on", "off", "True", "1e5", "1.0e5", "0x1F", "0o17", "1_000", "+12", ".5",
               ".inf", "-.inf", ".nan", "2024-01-01", "12:30:00", "!!binary aGVsbG8=", "!!set {a, b}",
               "!!python/object:os.system", "!!python/name:os.system", "&a [*a]", "*undefined", "'", '"', "[", "]",
               "{", "}", ":", "- a", "? a", "|", ">", "#", "%YAML 1.2", "---", "...", "a: b: c", "[1, [2, [3]]]",
               "{a: {b: {c: 1}}}", "[" * 40 + "]" * 40, "\t", "\n", "=", "==", "a=b"]
scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(EXTREME_INTS), st.integers(), st.sampled_from(EXTREME_FLOATS),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["mlp", "cnn", "resnet", "gpt", "sgd", "adam", "cosine", "val.loss", "train.accuracy", "csv",
                     "digits", "char", "bpe", "auto", "cpu", "cuda", "bf16", "best", "last"]),
    st.integers(min_value=1, max_value=20_000).map(lambda n: "x" * n),       # very long strings
)
yaml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=4), max_leaves=8)


def _typed(ann) -> st.SearchStrategy:
    """Values near what a key's type accepts: its literals, numbers at and past its bounds."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return st.sampled_from(args) | st.sampled_from(args).map(lambda a: str(a).upper() + "x")
    if origin is typing.Union:
        return st.one_of([_typed(a) for a in args if a is not type(None)] + [st.none()])
    if ann is bool:
        return st.booleans() | st.sampled_from(["true", "yes", 1, 0, 2])
    if ann is int:
        return st.sampled_from(EXTREME_INTS) | st.integers(-5, 300)
    if ann is float:
        return st.sampled_from(EXTREME_FLOATS) | st.floats(-2, 2) | st.sampled_from(EXTREME_INTS)
    if ann is str:
        return st.text(max_size=20) | st.sampled_from(["a:b", ":", "x/y", "..", ".", ""])
    if origin in (list, tuple):
        return st.lists(st.sampled_from(EXTREME_INTS + EXTREME_FLOATS) | st.integers(-3, 300), max_size=5)
    return yaml_values


def _bounds(key: str) -> tuple[float, float]:
    lo, hi = -5.0, 300.0
    for m in FIELDS[key].metadata:
        for attr, shift in (("ge", 0), ("gt", 1e-3)):
            if getattr(m, attr, None) is not None:
                lo = getattr(m, attr) + shift
        for attr, shift in (("le", 0), ("lt", -1e-3)):
            if getattr(m, attr, None) is not None:
                hi = getattr(m, attr) + shift
    return lo, min(hi, lo + 300)


PLAUSIBLE_STR = {"train.monitor": ["val.loss", "val.accuracy", "train.loss", "val.rmse", "train.mae"],
                 "data.path": ["/nonexistent/file.csv", "examples", ""], "data.target": ["label", "y"],
                 "name": ["run", "fuzz", "a b"], "data.dir": ["/nonexistent"]}


def _plausible(key: str, ann=None) -> st.SearchStrategy:
    """Values inside the key's type and bounds: configs that validate and reach the data and model."""
    ann = FIELDS[key].annotation if ann is None else ann
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is typing.Union:
        return st.none() | _plausible(key, [a for a in args if a is not type(None)][0])
    if ann is bool:
        return st.booleans()
    lo, hi = _bounds(key)
    if ann is int:
        return st.integers(int(lo) if lo == int(lo) else int(lo) + 1, int(hi))
    if ann is float:
        return st.floats(lo, hi, allow_nan=False)
    if origin is list:
        return st.lists(st.integers(1, 48), max_size=3)
    if origin is tuple:
        return st.tuples(st.floats(0, 0.999), st.floats(0, 0.999))
    if ann is str:
        return st.sampled_from(PLAUSIBLE_STR.get(key, ["x"]))
    return st.just({})


def _misspell(key: str, draw) -> str:
    i = draw(st.integers(0, len(key) - 1))
    how = draw(st.sampled_from(["drop", "swap", "insert", "case", "section"]))
    if how == "drop":
        return key[:i] + key[i + 1:]
    if how == "swap" and i + 1 < len(key):
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    if how == "insert":
        return key[:i] + draw(st.sampled_from(string.ascii_lowercase + "._-")) + key[i:]
    if how == "case":
        return key.upper()
    return "x" + key


@st.composite
def override(draw, keys=tuple(LEAVES), typed_keys=None):
    """(key, value): a known key with a typed or arbitrary value, a section, a misspelt or unknown key."""
    kind = draw(st.sampled_from(["known", "known", "known", "section", "misspelt", "unknown", "deeper", "long"]))
    if kind == "known":
        key = draw(st.sampled_from(keys))
        ann = (typed_keys or LEAVES).get(key)
        how = draw(st.sampled_from(["plausible", "plausible", "typed", "any"]))
        if how == "plausible" and key in FIELDS and key != "model.name":
            return key, draw(_plausible(key))
        return key, draw(_typed(ann) if ann is not None and how == "typed" else yaml_values)
    if kind == "section":
        return draw(st.sampled_from(SECTIONS)), draw(yaml_values)
    if kind == "misspelt":
        return _misspell(draw(st.sampled_from(keys)), draw), draw(yaml_values)
    if kind == "deeper":  # through a value: model.rope.x
        return draw(st.sampled_from(keys)) + "." + draw(st.text(string.ascii_lowercase, min_size=1, max_size=5)), \
            draw(yaml_values)
    if kind == "long":
        return "train." + "k" * draw(st.integers(100, 5000)), draw(scalars)
    return draw(st.text(max_size=20)), draw(yaml_values)


def _as_text(value) -> str:
    """How a user types the value after `key=`: YAML (flow style), or raw text."""
    if isinstance(value, str):
        return value
    try:
        return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()
    except yaml.YAMLError:
        return str(value)


@st.composite
def plausible_override(draw, keys=tuple(LEAVES)):
    key = draw(st.sampled_from([k for k in keys if k != "model.name"]))
    return key, draw(_plausible(key))


@st.composite
def override_texts(draw, keys=tuple(LEAVES), typed_keys=None):
    """One to four overrides as typed on the command line; a third of the lists only plausible ones."""
    one = plausible_override(keys) if draw(st.integers(0, 2)) == 0 else override(keys, typed_keys)
    items = draw(st.lists(one, min_size=1, max_size=4))
    texts = []
    for key, value in items:
        text = draw(st.sampled_from(YAML_TOKENS)) if draw(st.integers(0, 9)) == 0 else _as_text(value)
        texts.append(f"{key}={text}")
    return texts


# ---------------------------------------------------------------- what every outcome must satisfy

def _names_a_key(message: str, keys: list) -> bool:
    """The error names a key: one given (or its unknown first part, or the beginning of a very long one;
    written as typed, stripped of the spaces `key = value` allows, or as Python writes it, control
    characters escaped), or a config key."""
    names = set()
    for key in map(str, keys):
        parts = key.split(".")
        for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            if prefix.strip():  # as typed, as the loader reads it (overrides' keys are stripped), or escaped
                names |= {prefix[:60], prefix.strip()[:60], repr(prefix)[1:-1][:60]}
    blank = any(not part.strip() for key in map(str, keys) for part in key.split("."))
    return any(k in message for k in names) or any(k in message for k in KNOWN_KEYS) \
        or (blank and ("key is empty" in message or "empty part" in message))


# libyaml's loader and dumper when built (the same YAML, ten times faster than PyYAML's own)
_LOADER, _DUMPER = getattr(yaml, "CSafeLoader", yaml.SafeLoader), getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _assert_usable(cfg: Config) -> None:
    """A config that validates is one train() can save and read back (config.yaml) unchanged."""
    text = yaml.dump(cfg.to_dict(), Dumper=_DUMPER, sort_keys=False)
    assert build_config(yaml.load(text, Loader=_LOADER)) == cfg


def _check_outcome(load, keys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optim.name=adam does not use optim.momentum": the contract
        try:
            with time_limit(10):
                cfg = load()
        except ConfigError as e:
            message = str(e)
            assert len(message) < 3000, f"an error of {len(message)} characters: {message[:300]}"
            assert _names_a_key(message, keys), message
            event("ConfigError")
            return
    event("valid")
    _assert_usable(cfg)


# ---------------------------------------------------------------- load_config

@settings(max_examples=1000, **SETTINGS)
@given(texts=override_texts())
def test_generated_overrides_load_or_fail_naming_a_key(texts):
    # On the defaults: config files are the next test's (reading one per case would double the time).
    _check_outcome(lambda: load_config(None, texts), [t.partition("=")[0] for t in texts])


@settings(max_examples=300, **SETTINGS)
@given(items=st.lists(override(), min_size=1, max_size=5), how=st.sampled_from(["file", "dict"]))
def test_generated_config_files_and_dicts_load_or_fail_naming_a_key(items, how, tmp_path_factory):
    """Whole config files (nested garbage included) and the Python API's override dicts."""
    keys = [k for k, _ in items]
    if how == "dict":
        _check_outcome(lambda: load_config(None, dict(items)), keys)
        return
    tree: dict = {}
    for key, value in items:
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[parts[-1]] = value
    path = tmp_path_factory.mktemp("cfg") / "fuzz.yaml"
    try:
        path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    except (yaml.YAMLError, UnicodeEncodeError):
        path.write_text(str(tree), errors="replace")
    _check_outcome(lambda: load_config(path), keys + ["fuzz.yaml"])


@pytest.mark.parametrize("text, key", [
    ("model.hidden=" + "[" * 2000 + "]" * 2000, "model.hidden"),     # RecursionError in the YAML reader
    ("model.kwargs=&a {x: *a}", "model.kwargs"),                      # a value containing itself
    ("model.rope.sub=1", "model.rope"),                               # a dotted key through a value
    ("a..b=1", "a..b"),
    ("train.threads=100000", "train.threads"),                        # segfaulted in torch.set_num_threads
    ("train.seed=-1", "train.seed"),
    ("data.split_seed=4294967296", "data.split_seed"),
    ("schedule.warmup_epochs=.inf", "schedule.warmup_epochs"),
    ("optim.lr=.inf", "optim.lr"),
    ("train.accumulate=100000000000000000000", "train.accumulate"),
    ("regularize.augment.crop_padding=9223372036854775807", "regularize.augment.crop_padding"),
    ("name=../../elsewhere", "name"),
])
def test_inputs_the_generator_found(text, key):
    """Each of these raised a traceback, hung, crashed or was accepted before it was fixed."""
    with time_limit(10), pytest.raises(ConfigError) as err:
        load_config("examples/seed_mlp.yaml", [text])
    assert key in str(err.value) and len(str(err.value)) < 1000


def test_a_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    """Nine levels of nine aliases: 9**8 values; the error printed all 31 million characters of it."""
    lines = ["x:", "  a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"  {b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefg", "bcdefgh")]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines + ["model:", "  hidden: [*h, *h]", "  kwargs: {a: *h}"]) + "\n")
    with time_limit(5), pytest.raises(ConfigError, match="more than 100,000 values") as err:
        load_config(path)
    assert len(str(err.value)) < 500


# ---------------------------------------------------------------- the CLI: trainlab check, in-process

# check builds the data and model and times training steps: keys that size them get small values
# (a memory estimate before allocating is another item of issue 16), and keys that would download,
# compile (tens of seconds) or import arbitrary modules are chosen from safe values.
SIZE_KEYS = {"model.hidden", "model.channels", "model.depth", "model.width", "model.n_layer", "model.n_head",
             "model.n_embd", "model.block_size", "train.batch_size", "eval.batch_size", "data.image_size",
             "data.vocab_size", "train.accumulate", "train.threads", "data.workers", "train.epochs",
             "train.steps", "eval.every", "data.limit", "regularize.augment.crop_padding"}
SAFE = {
    "data.name": st.sampled_from(["digits", "iris", "wine", "breast_cancer", "diabetes", "csv", "imagefolder",
                                  "text", "tinyshakespeare", "cifar10", "nope"]),
    "model.name": st.sampled_from(["mlp", "cnn", "resnet", "gpt", "mpl", "no_such_module:Net", "trainlab.models:Nope"]),
    "train.compile": st.sampled_from([False, "no", 3]),
    "train.device": st.sampled_from(["cpu", "auto", "gpu"]),
    "data.download": st.just(False),
}
CHECK_KEYS = tuple(LEAVES)


def _small(ann):
    origin = typing.get_origin(ann)
    if origin is typing.Union:
        return st.none() | _small(typing.get_args(ann)[0])
    if origin in (list, tuple):
        return st.lists(st.integers(-2, 24), max_size=3)
    return st.integers(-2, 24) | st.sampled_from(["x", 1.5, None, [], {}])


CHECK_TYPES = {k: (None if k in SAFE or k in SIZE_KEYS else v) for k, v in LEAVES.items()}


@st.composite
def check_overrides(draw):
    """Half the lists only plausible overrides (most validate and train a step), half anything."""
    one = plausible_override(CHECK_KEYS) if draw(st.booleans()) else override(CHECK_KEYS, CHECK_TYPES)
    texts = []
    for key, value in draw(st.lists(one, min_size=1, max_size=3)):
        if key in SAFE:
            value = draw(SAFE[key])
        elif key in SIZE_KEYS and not (isinstance(value, int) and -3 < value < 25 or value is None):
            value = draw(_small(LEAVES[key]))
        texts.append(f"{key}={_as_text(value)}")
    return texts


QUICK = """\
data: {name: digits, val_fraction: 0.2, download: false}
model: {name: mlp, hidden: [16]}
optim: {name: sgd, lr: 0.05, momentum: 0.9}
train: {epochs: 1, batch_size: 32, seed: 0, progress: none, threads: 1, compile: false}
eval: {batch_size: 256}
"""
DATA_KEYS = ("data.name", "data.path", "data.dir", "data.limit", "data.val_fraction", "data.test_fraction",
             "data.target", "data.task")


@settings(max_examples=60, **SETTINGS)
@given(texts=check_overrides())
def test_generated_overrides_through_trainlab_check_exit_0_or_2(texts, tmp_path_factory, one_thread):
    from trainlab.cli import main

    path = tmp_path_factory.getbasetemp() / "quick.yaml"
    path.write_text(QUICK)
    stderr = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        with time_limit(30):
            try:
                code = main(["check", "-c", str(path), *texts, "--steps", "1"])
            except SystemExit as e:  # argparse: an override that looks like a flag
                code = e.code
    err = stderr.getvalue()
    event(f"trainlab check exit {code}")
    assert "Traceback" not in err, err
    keys = [t.partition("=")[0] for t in texts]
    # Exit 3 is a data problem: allowed when an override pointed the data somewhere (data.name=cifar10
    # offline, data.path=nowhere) or asked for splits the data cannot give.
    allowed = {0, 2} | ({3} if any(k in DATA_KEYS for k in keys) else set())
    assert code in allowed, (code, texts, err[-500:])
    if code == 2:
        assert _names_a_key(err, keys) or "usage:" in err, err
