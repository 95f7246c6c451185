"""export(run_dir, format) -> dict: a trained run's model as one file, normalisation inside, verified.

graph.py builds the exported computation (raw input -> normalisation -> model -> probabilities),
formats.py writes and reloads each format, verify.py compares the reloaded file with the trained
model. The file is written (atomically) only after it passed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, DataError

# The formats and their default file's ending (saved_model: a folder). A run of either backend
# exports every format: a keras run's checkpoint holds the torch model's weights (torch's exporters
# read it), and saved_model rebuilds the network in Keras from either backend's checkpoint.
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt", "saved_model": ".saved_model"}
ENGINES = {"onnx": "onnxruntime", "pt2": "torch.export.load", "torchscript": "torch.jit.load",
           "saved_model": "tf.saved_model.load"}
CHECK_EXAMPLES = 1000


def check_format(fmt: str) -> None:
    if fmt not in SUFFIXES:
        raise ConfigError(f"Unknown export format '{fmt}'. Formats: {', '.join(SUFFIXES)}.")


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
    if format == "saved_model":
        from .saved_model import check_model
        check_model(cfg.model.name)
    if format == "torchscript" and cfg.model.name == "gpt":
        raise ConfigError("--format torchscript cannot trace model.name=gpt (its attention chooses the causal "
                          "mask from the input's length, which tracing turns into a tensor). Use --format onnx "
                          "or --format pt2.")
    name = f"model{SUFFIXES[format]}"
    target = Path(out) if out is not None else run.path / "export" / name
    if target.is_dir() and format != "saved_model":
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
    if format == "saved_model":  # a folder, staged in a temporary place until it passed
        from . import saved_model
        data = saved_model.write(module, cfg, tuple(trained.splits.input_shape), graph.raw_dtype(trained),
                                 (spec_in["name"], spec_out["name"]), json.dumps(metadata))
        runner = saved_model.load(data)
    else:
        data = formats.serialise(format, module, example, (spec_in["name"], spec_out["name"]), metadata)
        runner = formats.load(format, data)
    found = verify.compare(trained, module, runner, x)
    engine = ENGINES[format]
    compared = "next-token probability" if trained.splits.task == "language_model" else \
        "value" if trained.splits.task == "regression" else "probability"
    if not found["difference"] <= found["bound"]:
        if format == "saved_model":
            saved_model.discard(data)
        raise verify.ExportMismatch(
            f"The {format} export of '{run.path}' disagrees with the trained model: largest {compared} difference "
            f"{found['difference']:.3g} on {len(x)} {split} examples ({engine}), above the float32 bound "
            f"{found['bound']:.3g}. Nothing was written. Try another --format; a custom model must not branch "
            "on its input's values or batch size.")
    if format == "saved_model":
        size = saved_model.size(data)
        saved_model.put(data, target)
    else:
        size = len(data)
        atomic_write_bytes(target, data)
    return {"run_dir": str(run.path), "format": format, "file": str(target), "bytes": size,
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
