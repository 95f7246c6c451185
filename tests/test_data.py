"""Tests of trainlab.data: every format module, locate's rules, splitting, on fixtures and real data."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shlex
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import trainlab.data as data
from trainlab.config import build_config
from trainlab.data import cifar, folder, idx, locate, tabular
from trainlab.errors import ConfigError, DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def real_system_roots(tmp_path, monkeypatch):
    """The real system roots (Fashion-MNIST in /usr/share/datasets), nothing above them."""
    monkeypatch.delenv("TRAINLAB_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def cfg_for(**data_keys):
    return build_config({"data": data_keys})


# ----------------------------------------------------------------------------------- IDX + locate

def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def write_tiny_mnist(folder: Path, n_train: int = 20, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def link_fashion(folder: Path, except_file: str) -> None:
    """folder/ holds symlinks to the real Fashion-MNIST files, except `except_file`."""
    folder.mkdir(parents=True)
    for f in idx.FILES:
        if f != except_file:
            (folder / f).symlink_to(FASHION / f)


def test_fashion_mnist_real_through_load(real_system_roots):
    splits = data.load(cfg_for(name="fashion-mnist", val_fraction=0.0, download=False))
    assert splits.train.x.shape == (60000, 1, 28, 28) and splits.train.x.dtype == torch.uint8
    assert splits.test.x.shape == (10000, 1, 28, 28) and splits.test.x.dtype == torch.uint8
    assert splits.train.y.dtype == torch.int64 and splits.val is None
    # Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
    assert torch.bincount(splits.train.y).tolist() == [6000] * 10
    assert torch.bincount(splits.test.y).tolist() == [1000] * 10
    assert splits.classes[0] == "T-shirt/top" and splits.input_shape == (1, 28, 28)
    assert 0.2 < splits.mean[0] < 0.4 and 0.3 < splits.std[0] < 0.4


def test_trainlab_data_root_wins_over_system_roots(real_system_roots, monkeypatch):
    mine = real_system_roots / "mine"
    write_tiny_mnist(mine / "fashion-mnist")
    monkeypatch.setenv("TRAINLAB_DATA", str(mine))
    src = idx.load("fashion-mnist", download=False)
    assert len(src.train) == 20 and len(src.test) == 10  # not the 60000 of /usr/share/datasets
    assert locate.data_roots()[0] == mine


def test_data_dir_wins_over_trainlab_data(roots, monkeypatch):
    write_tiny_mnist(roots / "a" / "kmnist", n_train=12)
    write_tiny_mnist(roots / "b" / "kmnist", n_train=14)
    monkeypatch.setenv("TRAINLAB_DATA", str(roots / "b"))
    assert len(idx.load("kmnist", str(roots / "a"), download=False).train) == 12


def test_incomplete_folder_names_missing_file_without_fall_back(real_system_roots, monkeypatch):
    link_fashion(real_system_roots / "mine" / "fashion-mnist", except_file="t10k-labels-idx1-ubyte.gz")
    monkeypatch.setenv("TRAINLAB_DATA", str(real_system_roots / "mine"))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz") as e:
        idx.load("fashion-mnist", download=False)  # a full copy exists in /usr/share/datasets
    assert "incomplete" in str(e.value) and e.value.exit_code == 3


def test_offline_not_found_lists_roots_and_files(roots, monkeypatch):
    monkeypatch.setenv("TRAINLAB_DATA", str(roots / "env"))
    with pytest.raises(DataError) as e:
        idx.load("mnist", str(roots / "cli"), download=False)
    msg = str(e.value)
    for root in (roots / "cli", roots / "env", roots / "home" / ".cache" / "trainlab", roots / "system"):
        assert str(root / "mnist") in msg
    assert all(f in msg for f in idx.FILES) and e.value.exit_code == 3


def test_truncated_gz_names_the_file(real_system_roots, monkeypatch):
    folder = real_system_roots / "mine" / "fashion-mnist"
    link_fashion(folder, except_file="train-labels-idx1-ubyte.gz")
    raw = (FASHION / "train-labels-idx1-ubyte.gz").read_bytes()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    monkeypatch.setenv("TRAINLAB_DATA", str(folder.parent))
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        idx.load("fashion-mnist", download=False)
    assert str(folder / "train-labels-idx1-ubyte.gz") in str(e.value)


def test_flipped_byte_in_gz_is_an_error(real_system_roots, monkeypatch):
    folder = real_system_roots / "mine" / "fashion-mnist"
    link_fashion(folder, except_file="train-labels-idx1-ubyte.gz")
    raw = bytearray((FASHION / "train-labels-idx1-ubyte.gz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(bytes(raw))
    monkeypatch.setenv("TRAINLAB_DATA", str(folder.parent))
    with pytest.raises(DataError) as e:
        idx.load("fashion-mnist", download=False)
    assert str(folder / "train-labels-idx1-ubyte.gz") in str(e.value)


def test_idx_sha256_table_has_published_digests():
    for name in ("mnist", "fashion-mnist", "kmnist"):
        assert set(idx.SHA256[name]) == set(idx.FILES)
        assert all(len(d) == 64 and int(d, 16) >= 0 for d in idx.SHA256[name].values())


def test_download_verifies_sha256(roots):
    src = roots / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"hello")
    urls = {"a.bin": (src / "a.bin").as_uri()}
    good = hashlib.sha256(b"hello").hexdigest()
    folder = locate.locate("toy", ["a.bin"], str(roots / "dl"), urls=urls, sha256={"a.bin": good})
    assert (folder / "a.bin").read_bytes() == b"hello"
    with pytest.raises(DataError, match="a.bin"):
        locate.locate("toy2", ["a.bin"], str(roots / "dl"), urls=urls, sha256={"a.bin": "0" * 64})
    assert not (roots / "dl" / "toy2").exists()  # nothing half-verified is left in place


# ------------------------------------------------------------------------------------------ CIFAR

class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 wrote str, as in the official batches (pickled by Python 2)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n])) if n < 256 else pickle.BINSTRING + struct.pack("<i", n))
        self.write(obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x (which the 2009 files predate, but which names the same module) wrote numpy.core.
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


class _Evil:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                 b"dog", b"frog", b"horse", b"ship", b"truck"]


def cifar10_files(style: str = "py2") -> dict[str, tuple[bytes, np.ndarray, np.ndarray]]:
    """Fake CIFAR-10 batches: name -> (file bytes, (N, 3072) uint8 data, labels)."""
    rng = np.random.default_rng(1)
    dump = py2_pickle if style == "py2" else (lambda o: pickle.dumps(o, protocol=4))
    out = {}
    for i, f in enumerate(cifar.LAYOUT["cifar10"]["train"] + ["test_batch"]):
        n = 3 if f == "test_batch" else 4
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n).tolist()
        out[f] = (dump({b"batch_label": b"batch %d" % i, b"labels": y, b"data": x,
                        b"filenames": [b"img%d.png" % j for j in range(n)]}), x, np.array(y))
    out["batches.meta"] = (dump({b"label_names": CIFAR10_NAMES, b"num_cases_per_batch": 4,
                                 b"num_vis": 3072}), None, None)
    return out


def md5s(files: dict) -> dict[str, str]:
    return {f: hashlib.md5(raw).hexdigest() for f, (raw, _, _) in files.items()}


def write_files(folder: Path, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f, (raw, _, _) in files.items():
        (folder / f).write_bytes(raw)


def make_tar(path: Path, base: str, files: dict, extra: dict[str, bytes] = {}) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        members = {f"{base}/{f}": raw for f, (raw, _, _) in files.items()} | extra
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def check_cifar10(src, files) -> None:
    train_x = np.concatenate([files[f][1] for f in cifar.LAYOUT["cifar10"]["train"]])
    train_y = np.concatenate([files[f][2] for f in cifar.LAYOUT["cifar10"]["train"]])
    assert src.train.x.shape == (20, 3, 32, 32) and src.train.x.dtype == torch.uint8
    assert src.test.x.shape == (3, 3, 32, 32) and src.test.y.dtype == torch.int64
    assert np.array_equal(src.train.x.numpy(), train_x.reshape(-1, 3, 32, 32))
    assert np.array_equal(src.train.y.numpy(), train_y)
    assert np.array_equal(src.test.y.numpy(), files["test_batch"][2])
    assert src.classes[:2] == ["airplane", "automobile"] and len(src.classes) == 10
    assert src.task == "classification"


@pytest.mark.parametrize("style", ["py2", "py3"])
@pytest.mark.parametrize("layout", ["extracted", "flat", "archive"])
def test_cifar10_layouts_load(roots, monkeypatch, layout, style):
    files = cifar10_files(style)
    monkeypatch.setitem(cifar.MD5, "cifar10", md5s(files))
    folder = roots / "data" / "cifar10"
    if layout == "extracted":
        write_files(folder / "cifar-10-batches-py", files)
    elif layout == "flat":
        write_files(folder, files)
    else:
        make_tar(folder / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
        monkeypatch.setitem(cifar.ARCHIVE_SHA256, "cifar10", locate.sha256_of(folder / "cifar-10-python.tar.gz"))
    check_cifar10(cifar.load("cifar10", str(roots / "data"), download=False), files)
    if layout == "archive":
        assert sorted(p.name for p in folder.iterdir()) == ["cifar-10-python.tar.gz"]  # read, not written


def test_cifar_through_load_and_make_splits(roots, monkeypatch):
    files = cifar10_files()
    monkeypatch.setitem(cifar.MD5, "cifar10", md5s(files))
    write_files(roots / "data" / "cifar10" / "cifar-10-batches-py", files)
    splits = data.load(cfg_for(name="cifar10", dir=str(roots / "data"), val_fraction=0.25, download=False))
    assert len(splits.train) == 15 and len(splits.val) == 5 and len(splits.test) == 3
    assert splits.input_shape == (3, 32, 32) and splits.is_image and len(splits.mean) == 3


def test_cifar_checksum_mismatch_is_caught_before_unpickling(roots, monkeypatch):
    files = cifar10_files()
    monkeypatch.setitem(cifar.MD5, "cifar10", md5s(files))  # the genuine fixtures' digests
    folder = roots / "data" / "cifar10" / "cifar-10-batches-py"
    write_files(folder, files)
    marker = roots / "pwned"
    payload = pickle.dumps({b"data": _Evil(marker)}, protocol=4)
    assert b"system" in payload
    (folder / "data_batch_3").write_bytes(payload)
    with pytest.raises(DataError, match="MD5") as e:
        cifar.load("cifar10", str(roots / "data"), download=False)
    assert str(folder / "data_batch_3") in str(e.value) and e.value.exit_code == 3
    assert not marker.exists()


def test_restricted_unpickler_refuses_code_even_with_matching_checksum(roots, monkeypatch):
    files = cifar10_files()
    folder = roots / "data" / "cifar10" / "cifar-10-batches-py"
    write_files(folder, files)
    marker = roots / "pwned"
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=4))
    digests = md5s(files) | {"data_batch_1": hashlib.md5((folder / "data_batch_1").read_bytes()).hexdigest()}
    monkeypatch.setitem(cifar.MD5, "cifar10", digests)
    with pytest.raises(DataError, match="refusing to unpickle") as e:
        cifar.load("cifar10", str(roots / "data"), download=False)
    assert "data_batch_1" in str(e.value) and "system" in str(e.value)
    assert not marker.exists()
    with pytest.raises(DataError):  # eval, builtins and friends are refused the same way
        cifar.unpickle(pickle.dumps({"x": eval}, protocol=2), Path("x"))


def test_cifar_download_checks_archive_and_extracts_safely(roots, monkeypatch):
    files = cifar10_files()
    monkeypatch.setitem(cifar.MD5, "cifar10", md5s(files))
    archive = roots / "server" / "cifar-10-python.tar.gz"
    # Members that try to escape the folder: the extraction only writes the known batch names.
    make_tar(archive, "cifar-10-batches-py", files,
             extra={"../escaped": b"x", "cifar-10-batches-py/../../escaped2": b"x", "/tmp/escaped3": b"x"})
    monkeypatch.setitem(cifar.URLS, "cifar10", archive.as_uri())
    monkeypatch.setitem(cifar.ARCHIVE_SHA256, "cifar10", "0" * 64)
    with pytest.raises(DataError, match="SHA-256"):
        cifar.load("cifar10", str(roots / "data"), download=True)
    assert not (roots / "data" / "cifar10").exists()  # a bad download is not left in place
    monkeypatch.setitem(cifar.ARCHIVE_SHA256, "cifar10", locate.sha256_of(archive))
    check_cifar10(cifar.load("cifar10", str(roots / "data"), download=True), files)
    extracted = roots / "data" / "cifar10" / "cifar-10-batches-py"
    assert sorted(p.name for p in extracted.iterdir()) == sorted(files)
    escaped = [p for p in roots.rglob("escaped*")] + list(Path("/tmp").glob("escaped3"))
    assert escaped == []
    check_cifar10(cifar.load("cifar10", str(roots / "data"), download=False), files)  # now from the folder


def test_cifar_offline_not_found(roots):
    with pytest.raises(DataError) as e:
        cifar.load("cifar100", str(roots / "data"), download=False)
    msg = str(e.value)
    assert str(roots / "data" / "cifar100") in msg and "cifar-100-python.tar.gz" in msg
    assert "cifar-100-python/" in msg


def test_cifar_incomplete_and_corrupt_archive(roots, monkeypatch):
    files = cifar10_files()
    monkeypatch.setitem(cifar.MD5, "cifar10", md5s(files))
    folder = roots / "data" / "cifar10" / "cifar-10-batches-py"
    write_files(folder, {f: v for f, v in files.items() if f != "batches.meta"})
    with pytest.raises(DataError, match="batches.meta"):
        cifar.load("cifar10", str(roots / "data"), download=False)
    shutil.rmtree(folder)
    (folder.parent / "cifar-10-python.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):  # the published SHA-256 fails
        cifar.load("cifar10", str(roots / "data"), download=False)


def test_cifar100_fine_labels(roots, monkeypatch):
    rng = np.random.default_rng(2)
    files = {}
    for f, n in (("train", 6), ("test", 2)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 100, n).tolist()
        files[f] = (py2_pickle({b"data": x, b"fine_labels": y, b"coarse_labels": [0] * n}), x, np.array(y))
    names = [b"class%02d" % i for i in range(100)]
    files["meta"] = (py2_pickle({b"fine_label_names": names, b"coarse_label_names": names[:20]}), None, None)
    monkeypatch.setitem(cifar.MD5, "cifar100", md5s(files))
    write_files(roots / "data" / "cifar100" / "cifar-100-python", files)
    src = cifar.load("cifar100", str(roots / "data"), download=False)
    assert src.train.x.shape == (6, 3, 32, 32) and len(src.classes) == 100 and src.classes[1] == "class01"
    assert np.array_equal(src.train.y.numpy(), files["train"][2])


def test_cifar_published_checksum_tables():
    assert set(cifar.MD5["cifar10"]) == set(cifar._members("cifar10"))
    assert set(cifar.MD5["cifar100"]) == set(cifar._members("cifar100"))
    assert all(len(d) == 64 for d in cifar.ARCHIVE_SHA256.values())


# ------------------------------------------------------------------------------------ imagefolder

def save_image(path: Path, color, size=(12, 9)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_imagefolder_split_layout(tmp_path):
    for i in range(3):
        save_image(tmp_path / "train" / "zebra" / f"z{i}.png", (0, 0, 255))
        save_image(tmp_path / "train" / "ant" / "nested" / f"a{i}.jpg", (255, 0, 0))
    save_image(tmp_path / "train" / "ant" / ".hidden.png", (0, 0, 0))
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    save_image(tmp_path / "test" / "zebra" / "t.png", (0, 0, 255))
    save_image(tmp_path / "val" / "ant" / "v.png", (255, 0, 0))
    src = folder.load(str(tmp_path), image_size=16)
    assert src.classes == ["ant", "zebra"] and src.image_size == 16
    assert isinstance(src.train, data.FileSplit) and len(src.train) == 6
    assert src.train.y.tolist() == [0, 0, 0, 1, 1, 1] and src.train.y.dtype == torch.int64
    assert [Path(f).name for f in src.test.files] == ["t.png"] and src.test.y.tolist() == [1]  # val/ ignored
    shutil.rmtree(tmp_path / "test")
    assert [Path(f).name for f in folder.load(str(tmp_path)).test.files] == ["v.png"]  # val/ is the test


def test_imagefolder_flat_layout_streams_and_splits(tmp_path):
    for c, color in (("cat", (255, 0, 0)), ("dog", (0, 255, 0))):
        for i in range(6):
            save_image(tmp_path / c / f"{i}.png", color)
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    src = folder.load(str(tmp_path), image_size=8)  # the broken file is not read at load time
    assert src.test is None and len(src.train) == 13
    ds = folder.ImageFileDataset(src.train.files, src.train.y, 8)
    x, y = ds[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x[0].min() == 255 and x[1].max() == 0  # red, channels first
    broken = src.train.files.index(str(tmp_path / "dog" / "broken.jpg"))
    with pytest.raises(DataError, match="broken.jpg"):
        ds[broken]
    good = [i for i in range(len(ds)) if i != broken]
    xb, yb = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(ds, good), batch_size=4)))
    assert xb.shape == (4, 3, 8, 8) and yb.dtype == torch.int64
    (tmp_path / "dog" / "broken.jpg").unlink()
    splits = data.make_splits(folder.load(str(tmp_path), 8),
                              cfg_for(name="imagefolder", path=str(tmp_path), image_size=8,
                                      val_fraction=0.25, test_fraction=0.25))
    assert len(splits.test) == 3 and len(splits.val) == 2 and len(splits.train) == 7
    assert splits.input_shape == (3, 8, 8) and splits.is_image


def test_read_image_resizes_grey_and_rgba(tmp_path):
    from PIL import Image

    Image.new("L", (5, 7), 100).save(tmp_path / "g.png")
    Image.new("RGBA", (30, 3), (10, 20, 30, 40)).save(tmp_path / "a.png")
    g = folder.read_image(tmp_path / "g.png", 4)
    assert g.shape == (3, 4, 4) and g.unique().tolist() == [100]
    assert folder.read_image(tmp_path / "a.png", 6)[:, 0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("case", ["missing", "empty", "files_only", "empty_class", "unknown_test_class"])
def test_imagefolder_errors_name_the_folder(tmp_path, case):
    root = tmp_path / "imgs"
    bad = root
    if case == "empty":
        root.mkdir()
    elif case == "files_only":
        save_image(root / "x.png", (1, 2, 3))
    elif case == "empty_class":
        save_image(root / "a" / "x.png", (1, 2, 3))
        (root / "b").mkdir()
        bad = root / "b"
    elif case == "unknown_test_class":
        save_image(root / "train" / "a" / "x.png", (1, 2, 3))
        save_image(root / "test" / "c" / "y.png", (1, 2, 3))
        bad = root / "test" / "c"
    with pytest.raises(DataError) as e:
        folder.load(str(root))
    assert f"'{bad}'" in str(e.value) and e.value.exit_code == 3


# ---------------------------------------------------------------------------------------- tabular

SKLEARN = {
    "digits": ((1797, 1, 8, 8), "classification", [str(i) for i in range(10)]),
    "iris": ((150, 4), "classification", ["setosa", "versicolor", "virginica"]),
    "wine": ((178, 13), "classification", ["class_0", "class_1", "class_2"]),
    "breast_cancer": ((569, 30), "classification", ["malignant", "benign"]),
    "diabetes": ((442, 10), "regression", None),
}


@pytest.mark.parametrize("name", list(SKLEARN))
def test_sklearn_sets_and_stratified_seeded_splits(name):
    shape, task, classes = SKLEARN[name]
    src = tabular.load_sklearn(name)
    assert tuple(src.train.x.shape) == shape and src.train.x.dtype == torch.float32
    assert src.task == task and src.classes == classes and src.test is None
    assert src.train.y.dtype == (torch.int64 if task == "classification" else torch.float32)
    if name == "digits":
        assert src.train.x.min() == 0 and src.train.x.max() == 16

    cfg = cfg_for(name=name, val_fraction=0.1, test_fraction=0.2, split_seed=3)
    a, b = data.make_splits(src, cfg), data.make_splits(src, cfg)
    n = shape[0]
    n_test = round(0.2 * n)
    assert len(a.test) == n_test and len(a.val) == round(0.1 * (n - n_test))
    assert len(a.train) + len(a.val) + len(a.test) == n
    for s, t in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):  # same seed, same split
        assert torch.equal(s.x, t.x) and torch.equal(s.y, t.y)
    other = data.make_splits(src, cfg_for(name=name, val_fraction=0.1, test_fraction=0.2, split_seed=4))
    assert not torch.equal(other.test.y, a.test.y) or not torch.equal(other.test.x, a.test.x)
    assert a.is_image == (name == "digits") and a.input_shape == shape[1:]
    if task == "classification":
        whole = torch.bincount(src.train.y).double() / n
        for s in (a.train, a.val, a.test):
            share = torch.bincount(s.y, minlength=len(whole)).double() / len(s)
            # Stratified: within one example (1 / len(s)); + 1e-9 for the float64 divisions (~1e-16).
            assert (share - whole).abs().max() <= 1 / len(s) + 1e-9
    else:
        assert "target_mean" in a.extra and a.num_outputs == 1
    if name != "digits":  # tabular features are standardised on the training split
        # Standardised in float64, stored in float32: U = 2^-24 of |z| <= ~10 per value (6e-7),
        # plus torch's float32 mean (pairwise: log2(n) U of mean |z| ~ 1e-6): 1e-4 is margin.
        assert a.train.x.mean(0).abs().max() < 1e-4 and a.mean is None


def test_sklearn_unknown_name():
    with pytest.raises(ConfigError, match="iris"):
        tabular.load_sklearn("irs")


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_mixed_columns_and_default_target(tmp_path):
    p = write_csv(tmp_path / "pets.csv",
                  "weight,colour,age,kind\n"
                  "4.5,black,3,cat\n30,brown,5,dog\n5,white,1,cat\n\n28,black,7,dog\n0.03,,1,fish\n")
    src = tabular.load_csv(str(p))
    # weight | colour one-hot ("" is a category: "", black, brown, white) | age
    assert src.train.x.shape == (5, 6) and src.train.x.dtype == torch.float32
    assert src.train.x[0].tolist() == [4.5, 0, 1, 0, 0, 3]
    assert src.train.x[4, 1:5].tolist() == [1, 0, 0, 0]
    assert src.task == "classification" and src.classes == ["cat", "dog", "fish"]
    assert src.train.y.tolist() == [0, 1, 0, 1, 2] and src.train.y.dtype == torch.int64 and src.test is None


def test_csv_explicit_target_and_auto_task(tmp_path):
    rows = "".join(f"{i},{i * 0.5},{[2, 10, 1][i % 3]}\n" for i in range(30))
    p = write_csv(tmp_path / "a.csv", "x,price,grade\n" + rows)
    src = tabular.load_csv(str(p))  # integer target, 3 values: classification, sorted by value
    assert src.task == "classification" and src.classes == ["1", "2", "10"]
    assert src.train.y[:3].tolist() == [1, 2, 0]
    reg = tabular.load_csv(str(p), target="price")  # non-integer values: regression
    assert reg.task == "regression" and reg.classes is None and reg.train.y.dtype == torch.float32
    assert reg.train.x.shape == (30, 2) and reg.train.y[3].item() == 1.5
    many = write_csv(tmp_path / "b.csv", "x,y\n" + "".join(f"{i},{i}\n" for i in range(25)))
    assert tabular.load_csv(str(many)).task == "regression"  # 25 distinct integers
    assert tabular.load_csv(str(many), task="classification").classes[:3] == ["0", "1", "2"]
    with pytest.raises(DataError, match="regression"):
        tabular.load_csv(str(write_csv(tmp_path / "c.csv", "x,y\n1,a\n2,b\n")), task="regression")


def test_csv_through_load_is_standardised(tmp_path):
    p = write_csv(tmp_path / "d.csv", "a,b,y\n" + "".join(f"{i},{i % 4},{'yn'[i % 2]}\n" for i in range(40)))
    splits = data.load(cfg_for(name="csv", path=str(p), val_fraction=0.2))
    assert splits.input_shape == (2,) and splits.classes == ["n", "y"] and not splits.is_image
    assert len(splits.test) == 8 and len(splits.val) == 6
    # 26 rows, |z| <= 1.8: float32 storage U |z| = 1e-7 each, the float32 mean of 26 adds <= 26 U:
    # ~2e-6 at most against 1e-5.
    assert splits.train.x.mean(0).abs().max() < 1e-5


@pytest.mark.parametrize("text,needles", [
    ("", ["is empty"]),
    ("a,b\n", ["no data rows"]),
    ("a,b\n1,2\n3\n", ["line 3", "1 cells"]),
    ("a,b,c\n1,2,3\n,5,6\n", ["column 'a'", "line 3"]),
    ("a,b\n1,x\n2,\n", ["target column 'b'", "line 3"]),
    ("a,a,b\n1,2,3\n", ["duplicate", "a"]),
    ("a,b\n1,x\n1,x\n", ["single value"]),
])
def test_csv_errors_name_file_and_place(tmp_path, text, needles):
    p = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as e:
        tabular.load_csv(str(p))
    assert str(p) in str(e.value) and e.value.exit_code == 3
    for needle in needles:
        assert needle in str(e.value)


def test_csv_missing_target_lists_columns(tmp_path):
    p = write_csv(tmp_path / "t.csv", "height,weight,label\n1,2,a\n")
    with pytest.raises(DataError) as e:
        tabular.load_csv(str(p), target="lable")
    msg = str(e.value)
    assert str(p) in msg and "'lable'" in msg and "height, weight, label" in msg
    with pytest.raises(DataError, match="does not exist"):
        tabular.load_csv(str(tmp_path / "nope.csv"))
