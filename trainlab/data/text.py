"""Text for language models: read files, tokenize (char, byte, BPE), split by position, batch windows."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .locate import data_roots, locate, verify

from ..config import TEXT_SETS  # noqa: F401 (the text datasets, named once in the config)

TOKENIZERS = ("char", "byte", "bpe")
# Tiny Shakespeare (Karpathy's char-rnn input.txt, 1,115,394 bytes, public domain) ships in the package.
SHAKESPEARE = Path(__file__).with_name("tinyshakespeare.txt")
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


# ---------------------------------------------------------------- reading

def text_path(name: str, path: Optional[str] = None, data_dir: Optional[str] = None) -> Path:
    """The file or folder to read: data.path for `text`; for `tinyshakespeare` the first data root
    holding ROOT/tinyshakespeare/input.txt (checked against the published SHA-256), else the shipped copy."""
    if name == "text":
        if not path:
            raise ConfigError("data.name=text needs data.path: a UTF-8 text file or a folder of .txt files.")
        return Path(path).expanduser()
    if name == "tinyshakespeare":
        if any((root / name).is_dir() for root in data_roots(data_dir)):
            found = locate(name, ["input.txt"], data_dir, download=False) / "input.txt"
            verify(found, SHAKESPEARE_SHA256)
            return found
        return SHAKESPEARE
    raise ConfigError(f"data.name={name} is not a text dataset: use one of {', '.join(TEXT_SETS)}.")


def read_files(path: Union[str, Path]) -> list[tuple[Path, bytes]]:
    """(file, bytes) of a text file, or of every .txt file under a folder in sorted path order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"Text folder '{path}' holds no .txt files. Put UTF-8 .txt files there "
                            "or point data.path at a single file.")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"Text file '{path}' not found. Set data.path to a UTF-8 text file or a folder "
                        "of .txt files.")
    read = [(f, f.read_bytes()) for f in files]
    if not any(data for _, data in read):
        raise DataError(f"Text '{path}' is empty: a language model needs text to learn from.")
    return read


def decode_utf8(files: Sequence[tuple[Path, bytes]], tokenizer: str = "char") -> str:
    """The files' text, concatenated; bytes that are not UTF-8 raise DataError naming file and offset."""
    parts = []
    for f, data in files:
        try:
            parts.append(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(
                f"Text file '{f}' is not UTF-8: byte offset {e.start} (0x{data[e.start]:02x}) {e.reason}. "
                f"data.tokenizer={tokenizer} reads UTF-8 text: convert the file (e.g. iconv -f latin1 "
                "-t utf-8) or use data.tokenizer=byte, which reads any bytes.") from None
    return "".join(parts)


# ---------------------------------------------------------------- tokenizers

class Tokenizer:
    """Text <-> token ids in [0, vocab_size); saved as JSON data (loading it runs no code)."""

    kind = ""
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """(N,) int64 ids: the fast path for whole files."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def _state(self) -> dict:
        return {}

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, **self._state()}, ensure_ascii=False)

    @staticmethod
    def from_json(text: str) -> "Tokenizer":
        """The tokenizer `to_json` wrote, e.g. Tokenizer.from_json(Path("tokenizer.json").read_text())."""
        try:
            state = json.loads(text)
            kind = state.pop("kind")
            if kind == "char":
                return CharTokenizer(state["chars"])
            if kind == "byte":
                return ByteTokenizer()
            if kind == "bpe":
                from tokenizers import Tokenizer as HFTokenizer
                return BPETokenizer(HFTokenizer.from_str(json.dumps(state["tokenizer"])))
        except Exception as e:  # bad JSON, missing keys, or tokenizers rejecting its part
            raise DataError(f"Not a trainlab tokenizer.json: {e}") from None
        raise DataError(f"Not a trainlab tokenizer.json: unknown kind '{kind}' (one of {', '.join(TOKENIZERS)}).")


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (N,) one per character


class CharTokenizer(Tokenizer):
    """One id per distinct character of the training text, in sorted order (nanoGPT's char model)."""

    kind = "char"

    def __init__(self, chars: str):
        if not chars:
            raise DataError("A char tokenizer needs at least one character.")
        self.chars = chars
        self.codes = _codepoints(chars)            # (V,) sorted code points; id -> character
        self.table = np.full(int(self.codes.max()) + 1, -1, dtype=np.int64)
        self.table[self.codes] = np.arange(len(chars))  # code point -> id, -1 outside the vocabulary
        self.vocab_size = len(chars)

    @classmethod
    def fit(cls, text: str) -> "CharTokenizer":
        return cls(np.unique(_codepoints(text)).tobytes().decode("utf-32-le", "surrogatepass"))

    def encode_array(self, text: str) -> np.ndarray:
        codes = _codepoints(text)
        top = len(self.table) - 1
        ids = self.table[np.minimum(codes, top)]      # a lookup per character, no Python loop
        unknown = (ids < 0) | (codes > top)
        if unknown.any():
            missing = np.unique(codes[unknown]).tobytes().decode("utf-32-le", "surrogatepass")
            shown = ", ".join(repr(c) for c in missing[:20]) + (" ..." if len(missing) > 20 else "")
            raise ConfigError(
                f"Text has {len(missing)} character(s) the char vocabulary ({self.vocab_size} characters of "
                f"the training text) lacks: {shown}. Use only characters of the training text, or train "
                "with data.tokenizer=byte or bpe, which encode any text.")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.codes[np.asarray(ids, dtype=np.int64)].tobytes().decode("utf-32-le", "surrogatepass")

    def _state(self) -> dict:
        return {"chars": self.chars}


class ByteTokenizer(Tokenizer):
    """The UTF-8 bytes themselves: 256 ids, any text or binary file."""

    kind = "byte"
    vocab_size = 256

    def encode_array(self, text: Union[str, bytes]) -> np.ndarray:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        # Sampled bytes may cut a character in two: show U+FFFD there rather than fail.
        return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")


# Cut points where GPT-2's pre-tokenizer regex always splits: after a "\n" between two non-space
# characters. Chunks cut there encode to exactly the ids of the whole text, in parallel.
_CUT = re.compile(r"(?<=\S\n)(?=\S)")
_CHUNK_CHARS = 1 << 16


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2's scheme) from Hugging Face `tokenizers`: any text encodes, merges learned."""

    kind = "bpe"

    def __init__(self, hf):
        self.hf = hf                                 # a tokenizers.Tokenizer
        self.vocab_size = hf.get_vocab_size()

    @classmethod
    def fit(cls, text: str, vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        alphabet = pre_tokenizers.ByteLevel.alphabet()   # the 256 byte symbols: every text encodes
        if vocab_size < len(alphabet):
            raise ConfigError(f"data.vocab_size={vocab_size} is below the {len(alphabet)} byte symbols "
                              "byte-level BPE starts from: use data.vocab_size >= 256 (GPT-2: 50257).")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet,
                                      special_tokens=[], show_progress=False)
        hf.train_from_iterator([text], trainer)
        if hf.get_vocab_size() < vocab_size:
            raise ConfigError(
                f"data.vocab_size={vocab_size} is out of reach: byte-level BPE on the training split "
                f"({len(text)} characters) ran out of pairs to merge at {hf.get_vocab_size()} tokens. "
                f"Use data.vocab_size <= {hf.get_vocab_size()} or more text.")
        return cls(hf)

    def encode_array(self, text: str) -> np.ndarray:
        pieces, chunks, size = _CUT.split(text), [], 0
        for piece in pieces:                         # ~64K-character chunks at exact cut points
            if not chunks or size >= _CHUNK_CHARS:
                chunks.append([])
                size = 0
            chunks[-1].append(piece)
            size += len(piece)
        encoded = self.hf.encode_batch(["".join(c) for c in chunks], add_special_tokens=False)
        return np.fromiter((i for e in encoded for i in e.ids), dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([int(i) for i in ids])

    def _state(self) -> dict:
        return {"tokenizer": json.loads(self.hf.to_str())}


def fit_tokenizer(kind: str, text: str, vocab_size: Optional[int] = None) -> Tokenizer:
    """A tokenizer of `kind` for `text` (bpe: learned on it, so pass the training split only)."""
    if kind == "char":
        return CharTokenizer.fit(text)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        if vocab_size is None:
            raise ConfigError("data.tokenizer=bpe needs data.vocab_size (e.g. 512 for Tiny Shakespeare).")
        return BPETokenizer.fit(text, vocab_size)
    raise ConfigError(f"data.tokenizer={kind} is not one of {', '.join(TOKENIZERS)}.")


# ---------------------------------------------------------------- splits and batches

def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for key, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"data.{key}={f} must be in [0, 1).")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} "
                          "leaves no training text: keep the sum below 1.")


def split_stream(ids, val_fraction: float = 0.1, test_fraction: float = 0.0):
    """(train, val, test) slices of a token stream by position: train first, then val, then test.

    No shuffling: neighbouring windows overlap, so a random split would leak val text into training.
    >>> train, val, test = split_stream(torch.arange(10), 0.2, 0.1)   # 7, 2 and 1 tokens
    """
    _check_fractions(val_fraction, test_fraction)
    n = len(ids)
    train_end = int(n * (1.0 - val_fraction - test_fraction))  # nanoGPT's int(n * 0.9) for 0.1, 0
    test_start = n - int(n * test_fraction)
    if train_end < 1:
        raise DataError(f"A stream of {n} tokens leaves no training tokens: use more text.")
    return ids[:train_end], ids[train_end:test_start], ids[test_start:]


@dataclass
class TextSplits:
    """Token streams of one text, split by position, and the tokenizer that made them."""

    train: torch.Tensor   # (N_train,) int64 token ids
    val: torch.Tensor     # (N_val,)
    test: torch.Tensor    # (N_test,)
    tokenizer: Tokenizer
    source: Path          # the file or folder read


def load_text(name: str = "text", path: Optional[str] = None, tokenizer: Union[str, Tokenizer] = "char",
              vocab_size: Optional[int] = None, val_fraction: float = 0.1, test_fraction: float = 0.0,
              data_dir: Optional[str] = None) -> TextSplits:
    """Read, tokenize and split a text dataset; pass a loaded Tokenizer to never re-fit one (resume).

    >>> s = load_text("tinyshakespeare", tokenizer="char")
    >>> s.tokenizer.vocab_size, len(s.train), len(s.val)      # (65, 1003854, 111540)
    """
    _check_fractions(val_fraction, test_fraction)
    source = text_path(name, path, data_dir)
    files = read_files(source)
    kind = tokenizer if isinstance(tokenizer, str) else tokenizer.kind
    if kind not in TOKENIZERS:
        raise ConfigError(f"data.tokenizer={kind} is not one of {', '.join(TOKENIZERS)}.")
    if kind == "byte":
        data: Union[str, bytes] = b"".join(d for _, d in files)   # any bytes, UTF-8 or not
    else:
        data = decode_utf8(files, kind)
    if isinstance(tokenizer, str):
        # BPE learns merges from the training part of the text only (the same leading fraction).
        train_text = data[: int(len(data) * (1.0 - val_fraction - test_fraction))] if kind == "bpe" else data
        tokenizer = fit_tokenizer(kind, train_text, vocab_size)
    ids = torch.from_numpy(tokenizer.encode_array(data))
    try:
        train, val, test = split_stream(ids, val_fraction, test_fraction)
    except DataError as e:  # too little text: name the file (a truncated one reads as a short text)
        raise DataError(f"Text '{source}': {e}") from None
    return TextSplits(train, val, test, tokenizer, source)


class TokenWindows:
    """Random windows of a token stream held on the device; `batch()` gives inputs and next tokens.

    A batch is batch_size windows of block_size + 1 consecutive tokens at starts drawn from a seeded
    CPU generator (the same windows on every device); state()/restore() resume the draws.
    >>> w = TokenWindows(splits.train, block_size=256, batch_size=64, seed=0, device="cuda")
    >>> x, y = w.batch()      # (64, 256) int64 each; y[:, t] is the token after x[:, t]
    """

    def __init__(self, ids: torch.Tensor, block_size: int, batch_size: int, seed: int = 0,
                 device: Union[str, torch.device] = "cpu", split: str = "train"):
        if block_size < 1 or batch_size < 1:
            raise ConfigError(f"block_size={block_size} and batch_size={batch_size} must be >= 1.")
        n = len(ids)
        if n < block_size + 1:
            raise DataError(
                f"The {split} split has {n} tokens, too few for one window of block_size + 1 = "
                f"{block_size + 1} tokens. Use model.block_size <= {max(n - 1, 0)}"
                + (f", a larger data.{split}_fraction" if split in ("val", "test") else "") + " or more text.")
        self.block_size, self.batch_size, self.device = block_size, batch_size, torch.device(device)
        self.ids = torch.as_tensor(ids).to(device=self.device, dtype=torch.int32)  # (N,): half of int64
        self.steps = torch.arange(block_size + 1, device=self.device)             # (T+1,)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        """Batches per pass: as many tokens as the split holds (each seen once on average)."""
        return max(1, len(self.ids) // (self.batch_size * self.block_size))

    def batch(self, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), both (B, T) int64 on the device; draws from `generator` (a CPU one) or the own one."""
        g = self.generator if generator is None else generator
        starts = torch.randint(0, len(self.ids) - self.block_size, (self.batch_size,), generator=g)  # (B,)
        rows = self.ids[starts.to(self.device)[:, None] + self.steps].long()  # (B, T+1)
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def restore(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# ---------------------------------------------------------------- the training loop's view

def token_splits(cfg, data_dir: Optional[str] = None, tokenizer: Optional[Tokenizer] = None):
    """data.Splits of a text config: TokenSplits by position, the tokenizer and its units in `extra`.

    extra["unit"] is what bits are counted per: `char` for the char tokenizer, `byte` otherwise, and
    extra["tokens_per_unit"] the whole text's tokens per character (1) or per UTF-8 byte.
    """
    from . import Splits, TokenSplit

    d = cfg.data
    text = load_text(d.name, d.path, tokenizer or d.tokenizer, d.vocab_size, d.val_fraction, d.test_fraction,
                     data_dir)
    tokens = len(text.train) + len(text.val) + len(text.test)
    if text.tokenizer.kind == "char":
        unit, per_unit = "char", 1.0
    else:
        size = sum(len(data) for _, data in read_files(text.source))
        unit, per_unit = "byte", tokens / size
    return Splits(train=TokenSplit(text.train), val=TokenSplit(text.val) if len(text.val) else None,
                  test=TokenSplit(text.test) if len(text.test) else None, task="language_model", classes=None,
                  input_shape=(cfg.model.block_size,), is_image=False, name=d.name,
                  extra={"tokenizer": text.tokenizer, "vocab_size": text.tokenizer.vocab_size, "unit": unit,
                         "tokens_per_unit": per_unit, "source": str(text.source)})


def language_metrics(loss: float, extra: dict) -> dict:
    """Perplexity exp(loss) and bits per character (or byte) of a mean next-token loss in nats."""
    return {"perplexity": math.exp(loss) if loss < 700 else float("inf"),
            f"bits_per_{extra['unit']}": loss / math.log(2) * extra["tokens_per_unit"]}


class TokenBatches:
    """Batches of a token stream behind loader.Batches' interface: (x, y), both (B, T) int64.

    Training (`steps` given): a pass ("epoch") is the `steps` optimiser steps between two
    evaluations; each batch is batch_size random windows drawn from `gen`, a CPU generator seeded
    per pass (or restored mid-pass on resume), so the windows are the same on every device.
    Evaluation: every non-overlapping window of the split, in order, batch_size windows at a time
    (at most `limit` windows): a val loss covers the whole split, each token predicted once.
    """

    def __init__(self, split, block_size: int, batch_size: int, device: torch.device, split_name: str,
                 steps: Optional[int] = None, limit: Optional[int] = None):
        self.device, self.block_size, self.batch_size, self.steps = device, block_size, batch_size, steps
        self.gen = torch.Generator()
        self.windows = TokenWindows(split.ids, block_size, batch_size, device=device, split=split_name)
        n = (len(split.ids) - 1) // block_size          # whole windows of block_size + 1 tokens
        self.n_windows = n if limit is None else min(n, limit)

    def __len__(self) -> int:
        if self.steps is not None:
            return self.steps
        return -(-self.n_windows // self.batch_size)

    def batch_sizes(self) -> list[int]:
        """Tokens predicted per batch (the weights of the per-step mean losses)."""
        if self.steps is not None:
            return [self.batch_size * self.block_size] * self.steps
        sizes = [self.batch_size] * (self.n_windows // self.batch_size)
        if self.n_windows % self.batch_size:
            sizes.append(self.n_windows % self.batch_size)
        return [windows * self.block_size for windows in sizes]

    def epoch(self, seed: int = 0, epoch: int = 1, start_step: int = 0, gen_state: Optional[torch.Tensor] = None):
        if self.steps is None:
            yield from self._in_order()
            return
        from .loader import epoch_seed
        if gen_state is not None:
            self.gen.set_state(gen_state)
        else:
            self.gen.manual_seed(epoch_seed(seed, epoch, 1))
        for _ in range(start_step, self.steps):
            yield self.windows.batch(self.gen)

    def _in_order(self):
        ids, span = self.windows.ids, self.windows.steps                  # (N,), (T+1,)
        for first in range(0, self.n_windows, self.batch_size):
            starts = torch.arange(first, min(first + self.batch_size, self.n_windows), device=self.device)
            rows = ids[starts[:, None] * self.block_size + span].long()   # (B, T+1)
            yield rows[:, :-1], rows[:, 1:]
