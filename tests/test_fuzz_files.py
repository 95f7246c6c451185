"""Generated file corruptions (Hypothesis): truncations and byte flips at chosen offsets of the
files trainlab reads (gzipped IDX from a small copy of Fashion-MNIST, a CSV, PNG images in class
folders, a text file for the char tokenizer) and of a mid-run checkpoint.

Every case ends in a DataError naming the file (exit 3), or in data identical to the undamaged
file's where the format can tell (IDX: gzip's CRC-32 plus the header and length checks; PNG: chunk
CRCs and zlib's Adler-32; checkpoints: their SHA-256 digest, so a checkpoint never loads changed).
CSV and text have no checksum: a flipped digit or letter is still valid data there, so those cases
must end in a DataError or in data of the same size; never a traceback. Each case runs under a
time limit (a hang fails).

CI budget (measured on a quiet 2-core machine, OMP_NUM_THREADS=1): about 15 s for the whole file;
derandomized (the same cases every run), no example database. Cases per run: 80 IDX, 300 CSV,
300 PNG, 250 text, 300 checkpoint corruptions, plus one damaged file of each format through
`trainlab check`. CIFAR batches are not here: no copy ships on the CI machine, and each batch file
is checked against its published MD5 before it is unpickled (tests/test_data.py).
"""

from __future__ import annotations

import csv
import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from trainlab import checkpoint, data
from trainlab.config import build_config
from trainlab.errors import DataError

from conftest import FASHION, ctrl_c_at, time_limit

SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """`original` truncated, or with bytes flipped or zeroed; offsets favour the header and the end,
    where formats keep their sizes and checksums."""
    n = len(original)
    offset = st.one_of(st.integers(0, min(63, n - 1)), st.integers(max(0, n - 64), n - 1), st.integers(0, n - 1))
    kind = draw(st.sampled_from(["truncate", "flip", "flips", "zeros"]))
    if kind == "truncate":
        return original[:draw(st.integers(0, n - 1))]
    out = bytearray(original)
    if kind == "zeros":  # a bad sector
        start = draw(offset)
        out[start:start + draw(st.integers(1, 512))] = bytes(min(512, n - start))[:len(out[start:start + 512])]
        return bytes(out[:n])
    for _ in range(1 if kind == "flip" else draw(st.integers(2, 8))):
        i = draw(offset)
        out[i] ^= draw(st.integers(1, 255))
    return bytes(out)


def _refused_naming(err: DataError, path: Path) -> None:
    assert str(path) in str(err) or path.name in str(err), str(err)


# ---------------------------------------------------------------- IDX .gz (a small Fashion-MNIST copy)

IDX = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
       "t10k-labels-idx1-ubyte.gz"]


@pytest.fixture(scope="module")
def small_fashion(tmp_path_factory):
    """The first 1,000 training and 300 test examples of the real files, as four valid gzipped IDX files."""
    fashion_available = FASHION
    assert (FASHION / IDX[0]).is_file(), "Fashion-MNIST missing: run `make setup` as root"
    folder = tmp_path_factory.mktemp("idx") / "fashion-mnist"
    folder.mkdir()
    for name, keep in zip(IDX, (1000, 1000, 300, 300)):
        raw = gzip.decompress((fashion_available / name).read_bytes())
        ndim = raw[3]
        header = bytearray(raw[:4 + 4 * ndim])
        per_item = int(np.prod([int.from_bytes(raw[8 + 4 * i:12 + 4 * i], "big") for i in range(ndim - 1)]))
        header[4:8] = keep.to_bytes(4, "big")
        (folder / name).write_bytes(gzip.compress(bytes(header) + raw[len(header):len(header) + keep * per_item],
                                                  mtime=0))
    return folder


def _idx_config():
    return build_config({"data": {"name": "fashion-mnist", "val_fraction": 0.1, "download": False}})


def _same_splits(a: data.Splits, b: data.Splits) -> bool:
    return all(torch.equal(getattr(a, s).x, getattr(b, s).x) and torch.equal(getattr(a, s).y, getattr(b, s).y)
               for s in ("train", "val", "test"))


@settings(max_examples=80, **SETTINGS)
@given(which=st.sampled_from(IDX), data_=st.data())
def test_a_damaged_idx_file_is_refused_or_reads_the_same_examples(small_fashion, tmp_path_factory, which, data_):
    reference = data.load(_idx_config(), str(small_fashion.parent))
    root = tmp_path_factory.mktemp("root")
    (root / "fashion-mnist").mkdir()
    for name in IDX:
        (root / "fashion-mnist" / name).symlink_to(small_fashion / name)
    target = root / "fashion-mnist" / which
    target.unlink()
    target.write_bytes(data_.draw(damaged((small_fashion / which).read_bytes())))
    try:
        with time_limit(10):
            got = data.load(_idx_config(), str(root))
    except DataError as e:
        _refused_naming(e, target)
        return
    assert _same_splits(got, reference), "a damaged IDX file loaded as a different dataset"


# ---------------------------------------------------------------- CSV (scikit-learn's iris, as a file)

@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory) -> Path:
    import sklearn.datasets

    bunch = sklearn.datasets.load_iris()
    path = tmp_path_factory.mktemp("csv") / "iris.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])
        for row, label in zip(bunch.data, bunch.target):
            w.writerow([*(f"{v:.1f}" for v in row), bunch.target_names[label]])
    return path


@settings(max_examples=300, **SETTINGS)
@given(data_=st.data())
def test_a_damaged_csv_is_refused_or_reads_rows_of_the_same_shape(iris_csv, tmp_path_factory, data_):
    from trainlab.data.tabular import load_csv

    original = iris_csv.read_bytes()
    path = tmp_path_factory.mktemp("csv") / "iris.csv"
    path.write_bytes(data_.draw(damaged(original)))
    try:
        with time_limit(10), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = load_csv(str(path))
    except DataError as e:
        _refused_naming(e, path)
        return
    # No checksum to tell a changed value: the rows that remain are read as rows, never misaligned.
    rows = len([line for line in path.read_bytes().splitlines()[1:] if line.strip()])
    assert len(source.train) <= 150 and len(source.train) == rows, (len(source.train), rows)
    assert torch.isfinite(source.train.x).all()


# ---------------------------------------------------------------- image folder (PNG files of Fashion-MNIST)

@pytest.fixture(scope="module")
def png_files(small_fashion) -> list[Path]:
    from PIL import Image

    raw = gzip.decompress((small_fashion / IDX[2]).read_bytes())
    images = np.frombuffer(raw, np.uint8, offset=16)[:8 * 784].reshape(8, 28, 28)
    folder = small_fashion.parent.parent / "png"
    folder.mkdir()
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@settings(max_examples=300, **SETTINGS)
@given(index=st.integers(0, 7), data_=st.data())
def test_a_damaged_png_is_refused_or_decodes_to_the_same_pixels(png_files, tmp_path_factory, index, data_):
    from trainlab.data.folder import read_image

    source = png_files[index]
    path = tmp_path_factory.mktemp("img") / source.name
    path.write_bytes(data_.draw(damaged(source.read_bytes())))
    try:
        with time_limit(10):
            got = read_image(path, 28)
    except DataError as e:
        _refused_naming(e, path)
        return
    assert torch.equal(got, read_image(source, 28)), "a damaged PNG decoded to other pixels"


# ---------------------------------------------------------------- text for the char tokenizer

@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    """20,000 bytes of Tiny Shakespeare plus lines with two- to four-byte UTF-8 characters."""
    from trainlab.data.text import SHAKESPEARE

    text = SHAKESPEARE.read_bytes()[:20_000].decode() + "\nCORIOLANUS: Où est la forêt ? Größe, naïveté — ½ €, 日本, 🎭.\n"
    path = tmp_path_factory.mktemp("text") / "play.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _text_config(path: Path):
    return build_config({"data": {"name": "text", "path": str(path), "tokenizer": "char", "val_fraction": 0.1,
                                  "test_fraction": 0.1},
                         "model": {"name": "gpt", "block_size": 32, "n_layer": 1, "n_head": 1, "n_embd": 8}})


@settings(max_examples=250, **SETTINGS)
@given(data_=st.data())
def test_damaged_text_is_refused_or_read_whole(text_file, tmp_path_factory, data_):
    path = tmp_path_factory.mktemp("text") / "play.txt"
    path.write_bytes(data_.draw(damaged(text_file.read_bytes())))
    try:
        with time_limit(10):
            splits = data.load(_text_config(path))
    except DataError as e:
        _refused_naming(e, path)
        return
    # Valid UTF-8 after the damage: every character of the file becomes exactly one token.
    characters = len(path.read_bytes().decode("utf-8"))
    assert len(splits.train) + len(splits.val or []) + len(splits.test or []) == characters


# ---------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def mid_run_checkpoint(tmp_path_factory) -> bytes:
    from trainlab.errors import Interrupted
    from trainlab.train import train

    from conftest import quick_config

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ckpt") / "run"

    interrupt = ctrl_c_at(1, 9)

    with pytest.raises(Interrupted):
        train(build_config(quick_config(train={"epochs": 2})), out=out, on_step_end=interrupt)
    return (out / "checkpoints" / "last.pt").read_bytes()


@settings(max_examples=300, **SETTINGS)
@given(data_=st.data())
def test_a_damaged_checkpoint_never_loads(mid_run_checkpoint, tmp_path_factory, data_):
    bad = data_.draw(damaged(mid_run_checkpoint))
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    path.write_bytes(bad)
    if bad == mid_run_checkpoint:  # a flip back and forth, or zeros over zeros: the same file
        return
    with time_limit(10), pytest.raises(DataError) as err:
        checkpoint.load(path)
    _refused_naming(err.value, path)


# ---------------------------------------------------------------- through the CLI: exit 3, no traceback

@pytest.mark.parametrize("fmt", ["idx", "csv", "png streamed by 2 workers", "text"])
def test_a_damaged_file_through_trainlab_check_is_exit_3_naming_it(fmt, tmp_path, small_fashion, iris_csv,
                                                                   png_files, text_file, capsys):
    from trainlab.cli import main

    if fmt == "idx":
        root = tmp_path / "root" / "fashion-mnist"
        root.mkdir(parents=True)
        for name in IDX:
            (root / name).write_bytes((small_fashion / name).read_bytes())
        bad = root / IDX[0]
        blob = bytearray(bad.read_bytes())
        blob[len(blob) // 2] ^= 0x10
        bad.write_bytes(bytes(blob))
        args = ["data.name=fashion-mnist", "data.download=false", f"data.dir={root.parent}"]
    elif fmt == "csv":
        bad = tmp_path / "iris.csv"
        bad.write_bytes(iris_csv.read_bytes().replace(b"5.1,3.5", b"5.1,\xff3.5", 1))
        args = ["data.name=csv", f"data.path={bad}"]
    elif fmt == "text":
        bad = tmp_path / "play.txt"
        bad.write_bytes(text_file.read_bytes()[:-4])  # "🎭.\n" ends the file: this cuts the four-byte 🎭 in two
        args = ["data.name=text", f"data.path={bad}", "model.name=gpt", "model.block_size=16", "model.n_embd=8",
                "model.n_head=1", "model.n_layer=1"]
    else:
        folder = tmp_path / "images"
        for c in ("a", "b"):
            (folder / c).mkdir(parents=True)
            for p in png_files[:4] if c == "a" else png_files[4:]:
                (folder / c / p.name).write_bytes(p.read_bytes())
        bad = folder / "a" / png_files[1].name
        bad.write_bytes(bad.read_bytes()[:70])
        args = ["data.name=imagefolder", f"data.path={folder}", "data.image_size=16", "data.loader=stream",
                "data.workers=2", "data.val_fraction=0.25", "data.test_fraction=0.25", "train.batch_size=4",
                "eval.batch_size=4"]
    code = main(["check", "-c", "examples/seed_mlp.yaml", *args, "train.threads=1", "--steps", "1"])
    stderr = capsys.readouterr().err
    assert code == 3, stderr
    assert str(bad) in stderr and "Traceback" not in stderr, stderr
