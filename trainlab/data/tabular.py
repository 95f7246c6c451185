"""Tabular sets: a CSV file read with the csv module, or a scikit-learn bundled dataset."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError, DataError
from . import ArraySplit, Source

SKLEARN_SETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")

# Cells that mean "no value" (compared after strip, case-insensitively).
MISSING = {"", "na", "n/a", "nan"}

# A numeric target with at most this many distinct integer values is a class label (task=auto).
MAX_AUTO_CLASSES = 20


def load_sklearn(name: str) -> Source:
    """One of scikit-learn's bundled sets (no download); test=None, so make_splits carves one.

    >>> load_sklearn("digits").train.x.shape   # torch.Size([1797, 1, 8, 8]), float32 values 0..16
    """
    import sklearn.datasets

    if name not in SKLEARN_SETS:
        raise ConfigError(f"data.name = {name!r} is not a scikit-learn set; expected one of "
                          f"{', '.join(SKLEARN_SETS)}.")
    bunch = getattr(sklearn.datasets, f"load_{name}")()
    if name == "diabetes":
        x = torch.from_numpy(bunch.data.astype(np.float32))      # (442, 10)
        y = torch.from_numpy(bunch.target.astype(np.float32))    # (442,) disease progression
        return Source(train=ArraySplit(x, y), test=None, task="regression", classes=None)
    if name == "digits":
        x = torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1)  # (1797, 1, 8, 8), 0..16
    else:
        x = torch.from_numpy(bunch.data.astype(np.float32))      # (N, F)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return Source(train=ArraySplit(x, y), test=None, task="classification",
                  classes=[str(c) for c in bunch.target_names], white=16.0 if name == "digits" else 1.0)


def _number(cell: str) -> Optional[float]:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) of every non-blank row; ragged rows are errors."""
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    rows = []
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"CSV file '{path}' is empty: expected a header row and data rows.")
            header = [h.strip() for h in header]
            for cells in reader:
                if not cells:  # a blank line
                    continue
                if len(cells) != len(header):
                    raise DataError(
                        f"CSV file '{path}', row at line {reader.line_num}: {len(cells)} cells, the header "
                        f"has {len(header)} columns. Fix that row (a stray delimiter or missing cell).")
                rows.append((reader.line_num, [c.strip() for c in cells]))
    except UnicodeDecodeError as e:
        raise DataError(f"CSV file '{path}' is not UTF-8 text ({e}).") from None
    except csv.Error as e:
        raise DataError(f"CSV file '{path}' is not valid CSV ({e}).") from None
    if not rows:
        raise DataError(f"CSV file '{path}' has a header but no data rows.")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"CSV file '{path}' has duplicate column names: {', '.join(dupes)}.")
    return header, rows


def _numeric_column(path: Path, name: str, cells: list[str], lines: list[int]) -> Optional[np.ndarray]:
    """float64 (N,) values when every present cell is a number; None for a categorical column.

    An empty cell in a numeric column is an error rather than imputed: a median taken over the
    whole file would leak the test rows into the training features, and a silent fill hides bad data.
    """
    values = [None if c.lower() in MISSING else _number(c) for c in cells]
    present = [c for c in cells if c.lower() not in MISSING]
    if not present or any(v is None for v, c in zip(values, cells) if c.lower() not in MISSING):
        return None
    missing = [i for i, c in enumerate(cells) if c.lower() in MISSING]
    if missing:
        raise DataError(
            f"CSV file '{path}': column '{name}' is numeric but has {len(missing)} empty cell(s), the "
            f"first in the row at line {lines[missing[0]]}. Fill or drop those rows; trainlab does "
            "not impute (a fill fitted on the whole file would leak test rows into training).")
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise DataError(f"CSV file '{path}': column '{name}' has the non-finite value "
                        f"'{cells[bad[0]]}' in the row at line {lines[bad[0]]}.")
    return np.asarray(values, dtype=np.float64)


def _target(path: Path, name: str, cells: list[str], lines: list[int], task: str):
    """(y, task, classes): int64 labels 0..K-1 with sorted class names, or float32 targets."""
    for i, c in enumerate(cells):
        if c.lower() in MISSING:
            raise DataError(f"CSV file '{path}': target column '{name}' is empty in the row at line {lines[i]}.")
    numbers = [_number(c) for c in cells]
    numeric = all(v is not None and math.isfinite(v) for v in numbers)
    if task == "auto":
        integral = numeric and all(v == int(v) for v in numbers)
        task = "classification" if not numeric or (integral and len(set(numbers)) <= MAX_AUTO_CLASSES) \
            else "regression"
    if task == "regression":
        if not numeric:
            bad = next(i for i, v in enumerate(numbers) if v is None or not math.isfinite(v))
            raise DataError(f"CSV file '{path}': data.task=regression but target column '{name}' holds "
                            f"'{cells[bad]}' in the row at line {lines[bad]}, not a finite number.")
        return torch.tensor(numbers, dtype=torch.float32), "regression", None
    if numeric:
        # Numeric labels sort by value (2 before 10) and are named canonically ("1.0" and "1" agree).
        keys = [int(v) if v == int(v) else v for v in numbers]
        classes_sorted = sorted(set(keys))
        names = [str(k) for k in classes_sorted]
    else:
        keys = cells
        classes_sorted = names = sorted(set(cells))
    if len(names) < 2:
        raise DataError(f"CSV file '{path}': target column '{name}' has a single value ({names[0]!r}); "
                        "classification needs at least two classes.")
    index = {k: i for i, k in enumerate(classes_sorted)}
    return torch.tensor([index[k] for k in keys], dtype=torch.int64), "classification", names


def load_csv(path: str, target: Optional[str] = None, task: str = "auto") -> Source:
    """Read a CSV with a header row: numeric columns as features, text columns one-hot encoded.

    The target is `target` (default: the last column). task auto: classification when the target
    is text, or integers with at most 20 distinct values; otherwise regression.

    >>> src = load_csv("data/penguins.csv", target="species")
    >>> src.train.x.shape, src.classes       # (torch.Size([333, 9]), ['Adelie', 'Chinstrap', 'Gentoo'])
    """
    from sklearn.preprocessing import OneHotEncoder

    if path is None:
        raise DataError("data.name=csv needs data.path: the CSV file to read.")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"CSV file '{path}' does not exist.")
    header, rows = _read_rows(path)
    target = header[-1] if target is None else target
    if target not in header:
        raise DataError(f"CSV file '{path}' has no target column '{target}'. Its columns are: "
                        f"{', '.join(header)}. Set data.target to one of them.")
    if len(header) < 2:
        raise DataError(f"CSV file '{path}' has only the target column '{target}': no features.")
    lines = [line for line, _ in rows]
    columns = {h: [cells[j] for _, cells in rows] for j, h in enumerate(header)}

    blocks = []  # one (N, k) float block per feature column, in file order
    for h in header:
        if h == target:
            continue
        numbers = _numeric_column(path, h, columns[h], lines)
        if numbers is not None:
            blocks.append(numbers[:, None])
        else:
            # Categories are fitted on the whole file, before the splits: acceptable because they
            # are input values, not labels or statistics; an empty cell is a category of its own,
            # and a category unseen at predict time encodes as all zeros (handle_unknown="ignore").
            enc = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)
            blocks.append(enc.fit_transform(np.asarray(columns[h], dtype=object)[:, None]))
    x = torch.from_numpy(np.concatenate(blocks, axis=1).astype(np.float32))  # (N, F)
    y, task, classes = _target(path, target, columns[target], lines, task)
    return Source(train=ArraySplit(x, y), test=None, task=task, classes=classes)
