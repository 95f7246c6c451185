"""docs/ stays true to the code: every config key described, the generated config page complete,
the commands page's flags those of the parser, the site builds with --strict, and every command
shown in README.md and docs/*.md runs (with --smoke where it trains, on small data)."""

import contextlib
import gzip
import io
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from pydantic import BaseModel

from trainlab import cli
from trainlab.config import Config, load_config
from trainlab.config.reference import missing_descriptions, render_markdown, rows
from trainlab.errors import ConfigError

from conftest import FASHION, ROOT

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)


def _walk(model: type[BaseModel], prefix: str = ""):
    """(dotted key, FieldInfo) of every key, sections included: an independent walk of the models."""
    for name, field in model.model_fields.items():
        yield prefix + name, field
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _walk(ann, prefix + name + ".")


def _blocks(path: Path) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block of a Markdown file."""
    return [(m.group(1).lower(), m.group(2)) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


# ---------------------------------------------------------------- the config reference

def test_every_config_key_has_a_description():
    missing = [key for key, field in _walk(Config) if not (field.description or "").strip()]
    assert not missing, f"config keys without Field(description=...) in trainlab/config/: {missing}"
    assert missing_descriptions() == []


def test_generated_config_page_lists_every_key_with_its_default():
    page = render_markdown()
    for key, field in _walk(Config):
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            assert re.search(rf"^#+ {re.escape(key)}$", page, re.M), f"no section heading for {key}"
        else:
            assert re.search(rf"^\| `{re.escape(key)}` \|", page, re.M), f"no row for {key}"
    by_key = {r["key"]: r for r in rows(Config)}
    assert by_key["name"]["default"] == "run"
    page_rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")}
    assert len(page_rows) == sum(1 for _, f in _walk(Config) if not (isinstance(f.annotation, type)
                                                                     and issubclass(f.annotation, BaseModel)))


@pytest.mark.parametrize("key, cells", [
    ("data.val_fraction", ["float", "`0.1`", "[0.0, 1.0)"]),
    ("data.limit", ["int or null", "`null`", "≥ 2"]),
    ("optim.name", ["string", "`sgd`", "`gd`, `sgd`, `momentum`, `adagrad`, `rmsprop`, `adam`, `adamw`"]),
    ("optim.lr", ["float", "`0.01`", "> 0.0"]),
    ("optim.betas", ["[float, float]", "`[0.9, 0.999]`"]),
    ("schedule.warmup_start", ["float", "`0.1`", "(0.0, 1.0]"]),
    ("regularize.augment.rotate", ["float", "`0.0`", "[0, 180]"]),
    ("regularize.augment.hflip", ["bool", "`false`", "`true`, `false`"]),
    ("model.hidden", ["list of int", "`[128]`"]),
    ("model.kwargs", ["mapping", "`{}`"]),
])
def test_generated_rows_show_type_default_and_range(key, cells):
    line = next(line for line in render_markdown().splitlines() if line.startswith(f"| `{key}` |"))
    got = [c.strip() for c in re.split(r"(?<!\\)\|", line)[2:-1]]
    assert got[:len(cells)] == cells, line


def test_config_errors_point_to_the_docs_page():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["optim.lrr=0.1"])
    assert "docs/config.md" in str(err.value) and (DOCS / "config.md").is_file()


def test_the_hook_puts_the_generated_tables_into_the_config_page():
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        import config_page
    finally:
        sys.path.remove(str(DOCS / "hooks"))

    class Page:
        class file:
            src_uri = "config.md"

    source = (DOCS / "config.md").read_text(encoding="utf-8")
    built = config_page.on_page_markdown(source, Page, None, None)
    assert render_markdown() in built and "You are reading the source file" not in built


# ---------------------------------------------------------------- the site

def test_mkdocs_builds_the_site_with_warnings_as_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    html = (tmp_path / "site" / "config" / "index.html").read_text(encoding="utf-8")
    assert "regularize.augment.crop_padding" in html and "train.early_stopping.patience" in html


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert not [p.name for p in PAGES if p.name not in nav]


# ---------------------------------------------------------------- the commands page against the parser

def _subparsers() -> dict:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)


def _usages(path: Path) -> dict[str, str]:
    """{command: usage text} of the `usage: trainlab COMMAND ...` lines of a page (continuations joined)."""
    found = {}
    for lang, body in _blocks(path):
        for chunk in re.split(r"^(?=usage: )", body, flags=re.M):
            if chunk.startswith("usage: trainlab "):
                text = " ".join(chunk.split())
                found[text.split()[2]] = text
    return found


def _flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", text.split(" ", 3)[3] if text.count(" ") >= 3 else ""))


def test_commands_page_shows_every_command_with_exactly_its_flags():
    usages = _usages(DOCS / "commands.md")
    subs = _subparsers()
    assert sorted(usages) == sorted(subs), "docs/commands.md needs one usage line per command of trainlab/cli.py"
    wrong = []
    for name, sub in subs.items():
        documented = _flags(usages[name])
        for action in sub._actions:
            strings = [s for s in action.option_strings if s not in ("-h", "--help")]
            if strings and not documented & set(strings):
                wrong.append(f"{name}: {strings[0]} is not documented")
        known = {s for a in sub._actions for s in a.option_strings}
        wrong += [f"{name}: {flag} is documented but not a flag" for flag in sorted(documented - known)]
    assert not wrong, "\n".join(wrong)


def test_usage_lines_on_other_pages_name_real_flags():
    subs = _subparsers()
    for page in PAGES:
        for name, text in _usages(page).items():
            assert name in subs, f"{page.name}: no command {name}"
            known = {s for a in subs[name]._actions for s in a.option_strings}
            assert _flags(text) <= known, f"{page.name}: {name} has no {sorted(_flags(text) - known)}"


def test_python_examples_compile_and_their_imports_work():
    for page in [ROOT / "README.md", *PAGES]:
        for lang, body in _blocks(page):
            if lang != "python":
                continue
            compile(body, str(page), "exec")
            imports = "\n".join(line for line in body.splitlines() if re.match(r"(import|from) \w", line))
            exec(compile(imports, str(page), "exec"), {})


# ---------------------------------------------------------------- every command shown runs

TRAINING = {"train", "pretrain", "check", "cv", "lr-find", "compare", "sweep-size", "search"}
# After the shown overrides, so these win; every label of the 256 kept (a few-label config's 600 > 256).
SMALL = ["data.limit=256", "data.labelled=null", "eval.limit=256", "train.epochs=1"]
FEWER = {"--folds": "2", "--seeds": "2", "--trials": "4", "--repeats": "1"}  # counts that multiply runs
STEPS = {"lr-find": "20", "check": "3"}
RUN_PLACEHOLDER = re.compile(r"^runs/(\w+)-\d{8}-\d{6}$")  # a run directory `trainlab train` wrote
DOCS_RUNS = ("seed_mlp", "shakespeare_char", "fashion_pretrain")  # smoke runs standing in for them, by name
RUN_IN_WORD = re.compile(r"runs/\w+-\d{8}-\d{6}")  # the same inside a word: model.init_from=runs/...


def shown_commands() -> list[str]:
    """Every `trainlab ...` / `python -m trainlab ...` line of a code block in README.md and docs/*.md."""
    found = []
    for page in [ROOT / "README.md", *PAGES]:
        for lang, body in _blocks(page):
            if lang in ("python", "yaml", "json"):
                continue
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith(("trainlab ", "python -m trainlab")):
                    words = shlex.split(line, comments=True)
                    text = " ".join(words)
                    if text not in found:
                        found.append(text)
    return found


def as_test(words: list[str]) -> list[str]:
    """The shown command made quick: --smoke for train; small data, one epoch and fewer runs for the
    other commands that train. Overrides are inserted right after the shown ones (argparse takes
    them as one group)."""
    command = words[0]
    words = list(words)
    if command not in TRAINING or "--resume" in words:
        return words
    if command in ("train", "pretrain"):
        return words + ["--smoke"]
    for i, word in enumerate(words[:-1]):
        if word in FEWER:
            words[i + 1] = FEWER[word]
        if word == "--widths":
            words[i + 1] = ",".join(words[i + 1].split(",")[:2])
        if word == "--steps":
            words[i + 1] = STEPS.get(command, words[i + 1])
    if command in STEPS and "--steps" not in words:
        words += ["--steps", STEPS[command]]
    overrides = cli.build_parser().parse_args(words).overrides
    at = len(words)
    if overrides:
        last = max(i for i, w in enumerate(words) if w == overrides[-1])
        at = last + 1
    return words[:at] + SMALL + words[at:]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, fashion_available_module):
    """A folder to run the shown commands in: examples/, a smoke-trained run and a 28x28 shoe.png."""
    ws = tmp_path_factory.mktemp("shown_commands")
    (ws / "examples").symlink_to(ROOT / "examples")
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:   # the first test image: an ankle boot
        pixels = f.read(16 + 28 * 28)[16:]
    from PIL import Image
    Image.frombytes("L", (28, 28), pixels).save(ws / "shoe.png")
    for name in DOCS_RUNS:
        command = "pretrain" if "pretrain" in name else "train"
        code, out, err = _main(ws, [command, "-c", f"examples/{name}.yaml", "--smoke", "--out", f"runs/{name}-docs"])
        assert code == 0, err
    return ws


@pytest.fixture(scope="module")
def fashion_available_module():
    assert (FASHION / "train-images-idx3-ubyte.gz").is_file(), \
        "Fashion-MNIST missing: run `make setup` as root (installs Debian's dataset-fashion-mnist)"


def _main(cwd: Path, argv: list[str], as_module: bool = False) -> tuple[int, str, str]:
    """cli.main(argv) in this process (imports paid once), in `cwd`; (exit code, stdout, stderr).
    as_module: through trainlab/__main__.py, as `python -m trainlab` runs it."""
    out, err = io.StringIO(), io.StringIO()
    here, showwarning, sys_argv = os.getcwd(), warnings.showwarning, sys.argv
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if as_module:
                sys.argv = ["trainlab", *argv]
                try:
                    runpy.run_module("trainlab", run_name="__main__", alter_sys=True)
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            else:
                code = cli.main(argv)
    finally:
        os.chdir(here)
        warnings.showwarning, sys.argv = showwarning, sys_argv
    return code, out.getvalue(), err.getvalue()


def _docs_run(placeholder: str) -> str:
    """The smoke run a shown run directory stands for: the language-model one for a gpt config's name."""
    name = RUN_PLACEHOLDER.match(placeholder).group(1)
    return name if name in DOCS_RUNS else DOCS_RUNS[0]


@pytest.mark.parametrize("shown", shown_commands())
def test_shown_command_runs(shown, workspace):
    words = shlex.split(shown)
    words = words[1:] if words[0] == "trainlab" else words[3:]   # "python -m trainlab ..."
    words = [RUN_IN_WORD.sub(lambda m: str(workspace / f"runs/{_docs_run(m.group(0))}-docs"), w) for w in words]
    if "--rdzv-endpoint" in words:
        # A command for several machines waits for the others: here it is parsed only, and
        # tests/test_distributed.py runs the same form as two nodes on 127.0.0.1.
        assert cli.build_parser().parse_args(words).nnodes != "1"
        return
    argv = as_test(words)
    code, out, err = _main(workspace, argv, as_module=shown.startswith("python -m trainlab"))
    assert code == 0, f"{' '.join(argv)} exited {code}:\n{err[-3000:]}"
    if "--json" in argv:
        json.loads(out.strip().splitlines()[-1])


def test_the_shown_commands_cover_every_command():
    shown = {shlex.split(c)[1] if c.startswith("trainlab") else shlex.split(c)[3] for c in shown_commands()
             if len(shlex.split(c)) > (1 if c.startswith("trainlab") else 3)}
    assert set(_subparsers()) <= shown, f"no example runs {sorted(set(_subparsers()) - shown)}"


def test_as_test_keeps_overrides_in_one_group():
    words = as_test(shlex.split("compare -c x.yaml train.epochs=3 --seeds 3 --vary optim.name=sgd,adam"))
    assert words == ["compare", "-c", "x.yaml", "train.epochs=3", *SMALL, "--seeds", "2", "--vary",
                     "optim.name=sgd,adam"]
    assert as_test(["train", "-c", "x.yaml"]) == ["train", "-c", "x.yaml", "--smoke"]
    assert as_test(["lr-find", "-c", "x.yaml"]) == ["lr-find", "-c", "x.yaml", "--steps", "20", *SMALL]
    assert as_test(["sweep-size", "-c", "x.yaml", "--widths", "32,128,512"]) == \
        ["sweep-size", "-c", "x.yaml", "--widths", "32,128", *SMALL]
