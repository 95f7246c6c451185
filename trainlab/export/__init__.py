"""export(run_dir, format) -> dict: a trained run's model as one file, normalisation inside, verified.

graph.py builds the exported computation (raw input -> normalisation -> model -> probabilities),
formats.py writes and reloads each format, verify.py compares the reloaded file with the trained
model. The file is written (atomically) only after it passed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, DataError

# What each training backend can write; a format of another backend is named in the error.
BACKEND_FORMATS = {"torch": ("onnx", "pt2", "torchscript"), "keras": ("onnx", "saved_model")}
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt"}  # the default file's ending
CHECK_EXAMPLES = 1000


def check_format(fmt: str, backend: Optional[str] = None) -> None:
    known = sorted({f for fs in BACKEND_FORMATS.values() for f in fs})
    if fmt not in known:
        raise ConfigError(f"Unknown export format '{fmt}'. Formats: {', '.join(known)} "
                          f"(torch runs: {', '.join(BACKEND_FORMATS['torch'])}).")
    if backend is not None and fmt not in BACKEND_FORMATS[backend]:
        others = [b for b, fs in BACKEND_FORMATS.items() if fmt in fs]
        raise ConfigError(f"--format {fmt} is a {'/'.join(others)}-backend format; this run trained with the "
                          f"{backend} backend (train.backend={backend}), which exports "
                          f"{', '.join(BACKEND_FORMATS[backend])}. Use --format onnx, or train with "
                          f"train.backend={others[0]}.")


def export(run_dir: str | Path, format: str = "onnx", out: Optional[str | Path] = None,
           data_dir: Optional[str] = None, check: int = CHECK_EXAMPLES, model=None) -> dict:
    """Write the run's model (the checkpoint predict uses: best.pt by default) with its input normalisation.

    >>> r = export("runs/seed_mlp-20261128-171500", "onnx")
    >>> r["file"], r["max_difference"]      # ('runs/seed_mlp-.../export/model.onnx', 3e-08)
    The file takes raw inputs (graph.py's docstring) and was loaded back (onnxruntime, torch.jit.load
    or torch.export.load) and compared with the trained model on up to `check` test examples; a
    difference beyond verify.bound raises ExportMismatch (exit 1) and writes nothing. `model`: the
    nn.Module object a run was trained with, if it was passed to train() as one (as for predict).
    """
    check_format(format)
    if check < 1:
        raise ConfigError(f"--check {check}: compare at least 1 test example (default {CHECK_EXAMPLES}).")
    from ..evaluate import load_run, read_run_config
    from ..runs import RunDir, atomic_write_bytes

    run = RunDir(Path(run_dir))
    cfg = read_run_config(run)
    backend = getattr(cfg.train, "backend", "torch")
    check_format(format, backend)
    if backend != "torch":
        raise ConfigError(f"Run '{run.path}' trained with train.backend={backend}: its export is that backend's "
                          "and is not available in this version of trainlab.")
    if format == "torchscript" and cfg.model.name == "gpt":
        raise ConfigError("--format torchscript cannot trace model.name=gpt (its attention chooses the causal "
                          "mask from the input's length, which tracing turns into a tensor). Use --format onnx "
                          "or --format pt2.")
    name = f"model{SUFFIXES[format]}"
    target = Path(out) if out is not None else run.path / "export" / name
    if target.is_dir():
        raise ConfigError(f"--out '{target}' is a folder; give a file name, e.g. {target / name}.")

    from . import formats, graph, verify

    if format == "onnx":
        formats.require("onnx", "onnxscript", "onnxruntime")
    start = time.perf_counter()
    trained = load_run(run.path, data_dir, model)  # no checkpoint: ConfigError (exit 2) before any data load
    module = graph.Exportable(trained)
    x, split = graph.check_inputs(trained, check)
    if len(x) == 0:
        raise DataError(f"Run '{run.path}': its {split} split holds no whole example (a text shorter than "
                        f"model.block_size + 1 tokens?), so the export cannot be checked.")
    spec_in, spec_out = graph.input_spec(trained), graph.output_spec(trained)
    metadata = {"run_dir": str(run.path), "checkpoint": trained.checkpoint, "format": format,
                "input": spec_in, "output": spec_out,
                "classes": list(trained.splits.classes) if trained.splits.task == "classification" else None}
    # Batch 2, so the batch size is not specialised to 1; a copy, since pt2 saves its example's storage.
    example = (x[:2] if len(x) >= 2 else x[:1].repeat(2, *[1] * (x.dim() - 1))).clone()
    data = formats.serialise(format, module, example, (spec_in["name"], spec_out["name"]), metadata)
    found = verify.compare(trained, module, formats.load(format, data), x)
    engine = {"onnx": "onnxruntime", "pt2": "torch.export.load", "torchscript": "torch.jit.load"}[format]
    compared = "next-token probability" if trained.splits.task == "language_model" else \
        "value" if trained.splits.task == "regression" else "probability"
    if not found["difference"] <= found["bound"]:
        raise verify.ExportMismatch(
            f"The {format} export of '{run.path}' disagrees with the trained model: largest {compared} difference "
            f"{found['difference']:.3g} on {len(x)} {split} examples ({engine}), above the float32 bound "
            f"{found['bound']:.3g}. Nothing was written. Try another --format; a custom model must not branch "
            "on its input's values or batch size.")
    atomic_write_bytes(target, data)
    return {"run_dir": str(run.path), "format": format, "file": str(target), "bytes": len(data),
            "checkpoint": trained.checkpoint, "input": spec_in, "output": spec_out,
            "classes": metadata["classes"], "checked": {"examples": len(x), "split": split, "engine": engine,
                                                        "compared": compared},
            "max_difference": found["difference"], "bound": found["bound"], "torch_error": found["torch_error"],
            **({"max_logit_difference": found["logit_difference"]} if "logit_difference" in found else {}),
            "seconds": time.perf_counter() - start}


def format_export(result: dict) -> str:
    """export()'s result as terminal text: the file, its input and output, the check."""
    i, o, c = result["input"], result["output"], result["checked"]
    shape = lambda s: "(N" + "".join(f", {d}" for d in s) + ")"  # noqa: E731
    return "\n".join([
        f"exported {result['format']}: {result['file']} ({result['bytes'] / 1e6:.2f} MB, {result['checkpoint']}.pt)",
        f"input:  {i['name']} {i['dtype']} {shape(i['shape'])}, {i['range']}",
        f"output: {o['name']} {o['dtype']} {shape(o['shape'])}",
        f"check:  {c['examples']} {c['split']} examples in {c['engine']}: largest {c['compared']} difference "
        f"{result['max_difference']:.3g} (bound {result['bound']:.3g})",
    ])
