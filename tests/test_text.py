"""Tests of trainlab.data.text on the shipped Tiny Shakespeare; tiny written files for the error cases."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time

import pytest
import torch

from trainlab.data import text as tx
from trainlab.errors import ConfigError, DataError

SHAKESPEARE_BYTES = 1_115_394


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return tx.SHAKESPEARE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def bpe_splits():
    """BPE learned on the leading 90% of Tiny Shakespeare (fitted once: about a second)."""
    return tx.load_text("tinyshakespeare", tokenizer="bpe", vocab_size=320)


# ---------------------------------------------------------------- the shipped text and the data roots

def test_shakespeare_ships_in_the_package_and_is_the_published_file(roots):
    assert tx.text_path("tinyshakespeare") == tx.SHAKESPEARE  # no root has it: the shipped copy
    data = tx.SHAKESPEARE.read_bytes()
    assert len(data) == SHAKESPEARE_BYTES
    assert hashlib.sha256(data).hexdigest() == tx.SHAKESPEARE_SHA256


def test_shakespeare_in_a_data_root_is_used_and_verified(roots):
    folder = roots / "mine" / "tinyshakespeare"
    folder.mkdir(parents=True)
    shutil.copy(tx.SHAKESPEARE, folder / "input.txt")
    assert tx.text_path("tinyshakespeare", data_dir=str(roots / "mine")) == folder / "input.txt"
    (folder / "input.txt").write_bytes(tx.SHAKESPEARE.read_bytes()[:1000])  # truncated: an error, no fall-back
    with pytest.raises(DataError, match="input.txt.*corrupt"):
        tx.text_path("tinyshakespeare", data_dir=str(roots / "mine"))


# ---------------------------------------------------------------- tokenizers on Shakespeare

def test_char_round_trip_on_shakespeare_is_exact_and_fast(shakespeare):
    tok = tx.CharTokenizer.fit(shakespeare)
    assert tok.vocab_size == 65 and tok.chars == "".join(sorted(set(shakespeare)))
    start = time.perf_counter()
    ids = tok.encode(shakespeare)
    seconds = time.perf_counter() - start
    assert len(ids) == len(shakespeare) and min(ids) == 0 and max(ids) == 64
    assert ids[:3] == [tok.chars.index(c) for c in "Fir"]
    assert tok.decode(ids) == shakespeare
    assert seconds < 1.0, f"char encoding of 1.1 MB took {seconds:.2f} s (a lookup table takes ~0.05 s)"


def test_byte_round_trip_on_shakespeare(shakespeare):
    tok = tx.ByteTokenizer()
    ids = tok.encode(shakespeare)
    assert tok.vocab_size == 256 and len(ids) == SHAKESPEARE_BYTES
    assert tok.decode(ids) == shakespeare
    assert tok.decode(tok.encode("naïve 日本 🙂")) == "naïve 日本 🙂"


def test_bpe_round_trip_on_shakespeare(bpe_splits, shakespeare):
    tok = bpe_splits.tokenizer
    assert isinstance(tok, tx.BPETokenizer) and tok.vocab_size == 320
    stream = torch.cat([bpe_splits.train, bpe_splits.val, bpe_splits.test])
    assert int(stream.min()) >= 0 and int(stream.max()) < 320
    assert tok.decode(stream.tolist()) == shakespeare
    assert len(stream) < 0.75 * len(shakespeare)  # merges learned: fewer tokens than characters
    # Byte-level: text far from Shakespeare's 65 characters still encodes and decodes exactly.
    odd = "naïve café — 日本語 🙂\x00\ttabs\r\n"
    assert tok.decode(tok.encode(odd)) == odd


def test_bpe_chunked_encoding_equals_the_library_on_the_whole_text(bpe_splits, shakespeare):
    piece = shakespeare[:200_000]  # ~3,000 chunk cut points
    assert bpe_splits.tokenizer.encode(piece) == bpe_splits.tokenizer.hf.encode(piece).ids


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_tokenizer_json_round_trip(kind, shakespeare, bpe_splits):
    tok = bpe_splits.tokenizer if kind == "bpe" else tx.fit_tokenizer(kind, shakespeare)
    saved = tok.to_json()
    assert json.loads(saved)["kind"] == kind  # plain JSON data: loading it executes nothing
    back = tx.Tokenizer.from_json(saved)
    assert type(back) is type(tok) and back.vocab_size == tok.vocab_size
    sample = shakespeare[5000:8000]
    assert back.encode(sample) == tok.encode(sample)
    assert back.decode(back.encode(sample)) == sample
    assert back.to_json() == saved
    if kind == "char":  # resume: a saved tokenizer is passed in and never fitted again
        again = tx.load_text("tinyshakespeare", tokenizer=back)
        assert again.tokenizer is back and again.train[:100].tolist() == tok.encode(shakespeare[:100])


def test_tokenizer_json_that_is_not_ours_is_a_data_error():
    for bad in ("not json", '{"kind": "wordpiece"}', '{"kind": "char"}', '{"kind": "bpe", "tokenizer": 3}'):
        with pytest.raises(DataError, match="tokenizer.json"):
            tx.Tokenizer.from_json(bad)


# ---------------------------------------------------------------- reading files and folders

def test_a_folder_reads_its_txt_files_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.txt").write_text("first\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third\n")
    (tmp_path / "notes.md").write_text("ignored")
    splits = tx.load_text("text", str(tmp_path), tokenizer="char", val_fraction=0.0)
    assert splits.tokenizer.decode(splits.train.tolist()) == "first\nsecond\nthird\n"


def test_byte_tokenizer_reads_bytes_that_are_not_utf8(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café crème brûlée".encode("latin-1") * 10)
    splits = tx.load_text("text", str(tmp_path / "latin1.txt"), tokenizer="byte", val_fraction=0.0)
    assert bytes(splits.train.tolist()) == "café crème brûlée".encode("latin-1") * 10


# ---------------------------------------------------------------- splits and windows

def test_split_is_by_position_train_val_test():
    train, val, test = tx.split_stream(torch.arange(100), val_fraction=0.1, test_fraction=0.2)
    assert train.tolist() == list(range(70))
    assert val.tolist() == list(range(70, 80)) and test.tolist() == list(range(80, 100))
    splits = tx.load_text("tinyshakespeare", tokenizer="char")  # nanoGPT's split: first 90% / last 10%
    n = len(splits.train) + len(splits.val)
    assert n == SHAKESPEARE_BYTES and len(splits.train) == int(n * 0.9) and len(splits.test) == 0
    with pytest.raises(ConfigError, match="val_fraction"):
        tx.split_stream(torch.arange(10), val_fraction=1.0)
    with pytest.raises(ConfigError, match="leaves no training text"):
        tx.split_stream(torch.arange(10), val_fraction=0.5, test_fraction=0.5)


def test_windows_have_shape_b_t_and_y_is_x_shifted_by_one():
    splits = tx.load_text("tinyshakespeare", tokenizer="char")
    windows = tx.TokenWindows(splits.train, block_size=32, batch_size=8, seed=3)
    x, y = windows.batch()
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    # Every row is a window of the stream at a start drawn from the seeded generator.
    starts = torch.randint(0, len(splits.train) - 32, (8,), generator=torch.Generator().manual_seed(3))
    for row, s in enumerate(starts.tolist()):
        assert torch.equal(x[row], splits.train[s:s + 32]) and torch.equal(y[row], splits.train[s + 1:s + 33])
    assert len(windows) == len(splits.train) // (8 * 32)


def test_windows_are_seeded_and_resume_from_their_state():
    ids = torch.arange(5000)
    a, b = tx.TokenWindows(ids, 16, 4, seed=7), tx.TokenWindows(ids, 16, 4, seed=7)
    assert all(torch.equal(a.batch()[0], b.batch()[0]) for _ in range(3))
    assert not torch.equal(tx.TokenWindows(ids, 16, 4, seed=8).batch()[0], tx.TokenWindows(ids, 16, 4, seed=7).batch()[0])
    buffer = io.BytesIO()
    torch.save(a.state(), buffer)  # goes into a checkpoint: must load with weights_only=True
    expected = [a.batch() for _ in range(3)]
    resumed = tx.TokenWindows(ids, 16, 4, seed=0)
    buffer.seek(0)
    resumed.restore(torch.load(buffer, weights_only=True))
    for x, y in expected:
        rx, ry = resumed.batch()
        assert torch.equal(rx, x) and torch.equal(ry, y)


# ---------------------------------------------------------------- bad input: clear errors

def test_missing_or_empty_text_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        tx.load_text("text", str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        tx.load_text("text", str(tmp_path / "empty.txt"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="no .txt files"):
        tx.load_text("text", str(tmp_path / "folder"))
    with pytest.raises(ConfigError, match="data.path"):
        tx.load_text("text", None)
    assert DataError.exit_code == 3 and ConfigError.exit_code == 2


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_bytes_that_are_not_utf8_name_the_file_and_offset(tmp_path, kind):
    (tmp_path / "good.txt").write_text("fine text\n")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(DataError, match=r"latin1\.txt.*not UTF-8: byte offset 3 \(0xe9\)"):
        tx.load_text("text", str(tmp_path), tokenizer=kind, vocab_size=300)


def test_block_size_longer_than_the_val_split_is_a_data_error(tmp_path):
    (tmp_path / "short.txt").write_text("To be, or not to be, that is the question.\n" * 3)
    splits = tx.load_text("text", str(tmp_path / "short.txt"), val_fraction=0.1)  # 13 val tokens
    tx.TokenWindows(splits.train, block_size=64, batch_size=2)
    with pytest.raises(DataError, match=r"val split has 13 tokens.*block_size \+ 1 = 65.*block_size <= 12"):
        tx.TokenWindows(splits.val, block_size=64, batch_size=2, split="val")


def test_prompt_with_characters_outside_the_char_vocabulary_names_them(shakespeare):
    tok = tx.CharTokenizer.fit(shakespeare)
    assert tok.encode("ROMEO:") == [tok.chars.index(c) for c in "ROMEO:"]
    with pytest.raises(ConfigError, match=r"2 character\(s\).*'é', '😀'"):
        tok.encode("ROMEO: café 😀 é")


def test_bpe_vocab_size_out_of_reach_says_what_it_reached(tmp_path):
    (tmp_path / "tiny.txt").write_text("hello hello world\n" * 20)
    with pytest.raises(ConfigError, match=r"vocab_size=5000 is out of reach.*at (\d+) tokens") as e:
        tx.load_text("text", str(tmp_path / "tiny.txt"), tokenizer="bpe", vocab_size=5000)
    reached = int(str(e.value).split(" tokens")[0].rsplit(" ", 1)[1])
    assert 256 < reached < 300
    with pytest.raises(ConfigError, match="below the 256 byte symbols"):
        tx.load_text("text", str(tmp_path / "tiny.txt"), tokenizer="bpe", vocab_size=100)
    with pytest.raises(ConfigError, match="needs data.vocab_size"):
        tx.load_text("text", str(tmp_path / "tiny.txt"), tokenizer="bpe")
    with pytest.raises(ConfigError, match="not one of char, byte, bpe"):
        tx.load_text("text", str(tmp_path / "tiny.txt"), tokenizer="words")
