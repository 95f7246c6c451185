"""predict(run_dir, input) -> one {"input", "predicted", "probabilities"} per image or CSV row.

Inputs are prepared exactly as the run's training data were: images decoded, checked against the
training shape, and normalised by the loader's own Batches.prepare; CSV rows encoded with the
training file's columns (numbers as numbers, text one-hot) and standardised with the training
split's statistics. With `onnx=FILE` the same raw inputs go to an exported file instead (its graph
normalises them, trainlab.export), run by onnxruntime, and are described the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import losses
from .data import IMAGE_SETS, ArraySplit, FileSplit
from .data.folder import EXTENSIONS
from .data.loader import Batches
from .errors import ConfigError, DataError
from .evaluate import TrainedRun, read_run_config, load_run
from .runs import RunDir

TABLE_SUFFIXES = (".csv", ".tsv", ".tab")


def predict(run_dir: str | Path, input_path: str | Path, data_dir: Optional[str] = None,
            model: Optional[torch.nn.Module] = None, onnx: Optional[str | Path] = None) -> list[dict]:
    """Classify (or regress) an image file, a folder of images, or the rows of a CSV file.

    >>> predict("runs/seed_mlp-20261128-171500", "shoe.png")
    [{'input': 'shoe.png', 'predicted': 'Sneaker', 'probabilities': {'T-shirt/top': 0.001, ...}}]
    CSV rows are numbered from 1 (the first row under the header); regression runs give the value
    in the target's units as "predicted" and None as "probabilities". `onnx`: a file `trainlab
    export RUN_DIR --format onnx` wrote, run by onnxruntime on the same raw inputs instead of the
    checkpoint (the run still gives the class names and the CSV encoding).
    """
    runner = None
    if onnx is not None:  # a missing or unreadable file fails before any data load
        onnx_path = Path(onnx).expanduser()
        if not onnx_path.is_file():
            raise ConfigError(f"--onnx '{onnx_path}' does not exist. Write it first: trainlab export {run_dir} "
                              "--format onnx (then give RUN_DIR/export/model.onnx).")
        from .export.formats import onnx_runner
        runner = onnx_runner(onnx_path, f"--onnx '{onnx_path}'")
    path = Path(input_path).expanduser()
    if not path.exists():
        raise DataError(f"Input '{path}' does not exist. Give an image file, a folder of images or a CSV file.")
    is_table = path.is_file() and path.suffix.lower() in TABLE_SUFFIXES
    cfg = read_run_config(RunDir(Path(run_dir)))  # the input's kind is checked before any data load
    if cfg.model.name == "gpt":
        raise ConfigError(f"Run '{run_dir}' is a language model: predict classifies images and table rows. "
                          f"Continue a text with: trainlab generate {run_dir} --prompt TEXT")
    if is_table and cfg.data.name in IMAGE_SETS:
        raise ConfigError(f"Run '{run_dir}' was trained on images ({cfg.data.name}); '{path}' is a table. "
                          "Give an image file or a folder of images.")
    if not is_table and cfg.data.name not in IMAGE_SETS:
        raise ConfigError(f"Run '{run_dir}' was trained on tabular data ({cfg.data.name}); give a CSV file "
                          f"with its feature columns, not '{path}'.")
    # The data are loaded again, with the run's config: that recovers the exact fitted preprocessing
    # (per-channel mean/std, feature mean/scale, class names, target mean/std) with no copy of it.
    trained = load_run(run_dir, data_dir, model)
    if is_table:
        x, names = _table_raw(path, trained)
    else:
        files = _image_files(path)
        x = torch.stack([_read_image(f, trained) for f in files])
        names = [str(f) for f in files]
    out = model_outputs(trained, x) if runner is None else _onnx_outputs(trained, runner, x)
    return _described(trained, out, names)


@torch.no_grad()
def model_outputs(trained: TrainedRun, x: torch.Tensor, model: Optional[torch.nn.Module] = None,
                  dtype: Optional[torch.dtype] = None) -> np.ndarray:
    """(N, K) float64 probabilities, or (N,) values in target units, of raw inputs as predict reads them.

    x: (N, C, H, W) images as the dataset stores them (uint8; digits float 0..16), or (N, F) float32
    table rows encoded as the training file but not standardised. `model`, `dtype`: another copy of
    the run's model (export checks its file against a float64 one); by default the trained model.
    """
    splits = trained.splits
    model = trained.model if model is None else model
    dtype = trained.dtype if dtype is None else dtype
    device = next(model.parameters()).device
    if not splits.is_image:
        x = standardise(x, splits)
    dummy_y = torch.zeros(len(x), dtype=splits.train.y.dtype)
    # Batches normalises exactly as training and evaluation do (uint8 -> [0, 1] -> mean/std).
    batches = Batches(ArraySplit(x, dummy_y), splits, trained.cfg.eval.batch_size, device, dtype)
    out = torch.cat([losses.predictions(model(xb).double(), trained.loss_name, splits.task).cpu()
                     for xb, _ in batches.epoch()]).numpy()
    if splits.task == "regression":
        out = out * splits.extra["target_std"] + splits.extra["target_mean"]
    return out


def _onnx_outputs(trained: TrainedRun, run, x: torch.Tensor) -> np.ndarray:
    """The same outputs from an exported ONNX file (normalisation inside it), run by onnxruntime."""
    from .export.formats import check_onnx_input
    from .export.graph import input_spec

    check_onnx_input(run, input_spec(trained), run.where, str(trained.run.path))
    step = trained.cfg.eval.batch_size
    return torch.cat([run(x[i:i + step]) for i in range(0, len(x), step)]).double().numpy()


def _described(trained: TrainedRun, out: np.ndarray, names: list) -> list[dict]:
    """One {"input", "predicted", "probabilities"} per input from model_outputs' array."""
    splits = trained.splits
    if splits.task == "regression":
        return [{"input": n, "predicted": float(v), "probabilities": None} for n, v in zip(names, out)]
    classes = splits.classes
    return [{"input": n, "predicted": classes[int(p.argmax())],
             "probabilities": {c: float(v) for c, v in zip(classes, p)}} for n, p in zip(names, out)]


# ---------------------------------------------------------------- images

def _image_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise DataError(f"Folder '{path}' holds no images ({', '.join(EXTENSIONS)}).")
    return files


def _read_image(path: Path, trained: TrainedRun) -> torch.Tensor:
    """One image as the training split stores it: (C, H, W) uint8, or float on digits' 0..16 scale."""
    splits = trained.splits
    c, h, w = splits.input_shape
    if isinstance(splits.train, FileSplit):
        # imagefolder runs resize every image to data.image_size and convert it to RGB while
        # training, so any size and channel count is fine here: the same function decodes it.
        from .data.folder import read_image
        return read_image(path, w)
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError (truncated), ...
        raise DataError(f"Image file '{path}' cannot be decoded ({type(e).__name__}: {e}).") from None
    # Colour channels, not counting alpha (dropped, as training images have none); a palette is colour.
    channels = 3 if im.mode in ("P", "PA") else len([b for b in im.getbands() if b != "A"])
    if (im.width, im.height) != (w, h) or channels != c:
        kind = lambda n: {1: "grayscale", 3: "RGB"}.get(n, f"{n}-channel")  # noqa: E731
        mode = "L" if c == 1 else "RGB"
        raise DataError(
            f"Image '{path}' is {im.width}x{im.height} {kind(channels)} ({channels} channel(s)); run "
            f"'{trained.run.path}' was trained on {trained.cfg.data.name} images of {w}x{h} pixels, "
            f"{kind(c)} ({c} channel(s)). Convert it first, e.g. with Pillow: "
            f"Image.open(path).convert('{mode}').resize(({w}, {h})).save(...).")
    arr = np.asarray(im.convert("L" if c == 1 else "RGB"), dtype=np.uint8).reshape(h, w, c)
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (C, H, W) uint8
    if splits.train.x.dtype != torch.uint8:
        # A float set (scikit-learn's digits: 0..16): map 0..255 pixels onto its range.
        x = x.to(splits.train.x.dtype) / 255.0 * splits.white
    return x


# ---------------------------------------------------------------- tables

def _table_features(path: Path, trained: TrainedRun) -> tuple[torch.Tensor, list[int]]:
    """(N, F) float32 features standardised as in training, and the row numbers (from 1)."""
    x, numbers = _table_raw(path, trained)
    return standardise(x, trained.splits), numbers


def standardise(x: torch.Tensor, splits) -> torch.Tensor:
    """Raw (N, F) float32 features -> as data._standardise stores them: (x - mean) / scale in float64
    (StandardScaler's arithmetic), rounded to float32."""
    mean = np.asarray(splits.extra["feature_mean"])
    scale = np.asarray(splits.extra["feature_scale"])
    return torch.from_numpy((x.double().numpy() - mean) / scale).float()


def _table_raw(path: Path, trained: TrainedRun) -> tuple[torch.Tensor, list[int]]:
    """(N, F) float32 features encoded as in training but not standardised, and the row numbers.

    Mirrors trainlab.data.tabular.load_csv (same column typing, one-hot encoders fitted on the
    whole training file, float32 features).
    """
    from sklearn.preprocessing import OneHotEncoder

    from .data import tabular

    cfg = trained.cfg
    header, rows = tabular._read_rows(path)
    lines = [line for line, _ in rows]
    columns = {h: [cells[j] for _, cells in rows] for j, h in enumerate(header)}
    if cfg.data.name == "csv":
        train_path = Path(cfg.data.path).expanduser()
        train_header, train_rows = tabular._read_rows(train_path)
        target = cfg.data.target or train_header[-1]
        features = [h for h in train_header if h != target]
        train_lines = [line for line, _ in train_rows]
        train_columns = {h: [cells[j] for _, cells in train_rows] for j, h in enumerate(train_header)}
    else:  # a scikit-learn set: every feature numeric, named as scikit-learn names them
        import sklearn.datasets
        features = list(getattr(sklearn.datasets, f"load_{cfg.data.name}")().feature_names)
        train_columns = None
    missing = [h for h in features if h not in columns]
    if missing:
        raise DataError(f"CSV file '{path}' lacks the feature column(s) {', '.join(missing)} the run was "
                        f"trained with. Its columns must include: {', '.join(features)}.")
    blocks = []
    for h in features:
        numeric = train_columns is None or \
            tabular._numeric_column(train_path, h, train_columns[h], train_lines) is not None
        if numeric:
            values = tabular._numeric_column(path, h, columns[h], lines)
            if values is None:
                raise DataError(f"CSV file '{path}': column '{h}' must hold numbers, as in the training data; "
                                "it has text or no values.")
            blocks.append(values[:, None])
        else:
            enc = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)
            enc.fit(np.asarray(train_columns[h], dtype=object)[:, None])
            blocks.append(enc.transform(np.asarray(columns[h], dtype=object)[:, None]))
    x = torch.from_numpy(np.concatenate(blocks, axis=1).astype(np.float32))
    return x, list(range(1, len(rows) + 1))


def format_predictions(predictions: list[dict]) -> str:
    """A terminal table: input, predicted class (or value) and its probability."""
    if not predictions:
        return "(no inputs)"
    rows = []
    for p in predictions:
        prob = p["probabilities"]
        rows.append([str(p["input"]), str(p["predicted"]) if prob is not None else f"{p['predicted']:.6g}",
                     f"{prob[p['predicted']]:.4f}" if prob is not None else "-"])
    header = ["input", "predicted", "probability"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])
