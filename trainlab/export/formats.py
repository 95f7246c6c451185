"""Each export format: the module written to bytes, and those bytes loaded back as a consumer would.

onnx         torch.onnx.export(dynamo=True): torch.export's graph translated by onnxscript; run by
             onnxruntime
pt2          torch.export.save of an ExportedProgram: what torch recommends since TorchScript's
             deprecation; loaded by torch.export.load without the model's Python code
torchscript  torch.jit.trace + torch.jit.save: deprecated in torch 2.13 (torch points to torch.export)
             but still what libtorch (C++) and older serving stacks load with torch.jit.load

Every format takes a batch of any size (dimension 0 dynamic); the rest of the shape is fixed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError, DataError
from . import SUFFIXES
METADATA = "trainlab.json"  # name of the metadata entry (ONNX metadata_props key, extra file in the others)
ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)", "float64": "tensor(double)",
             "int64": "tensor(int64)"}

Runner = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def _quiet():
    """The exporters narrate on stdout and log/warn about their own internals (torchvision ops
    absent, pytree deprecations): noise to a user, and stdout must end with --json's object."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*|onnxscript\..*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def require(*modules: str) -> None:
    """The export extra's packages, or a clear error (exit 2) saying how to install them."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"This needs {', '.join(missing)}, which are not installed: pip install 'trainlab[export]' "
                          "(onnx, onnxscript, onnxruntime).")


def _capture(fmt: str, module: torch.nn.Module, example: torch.Tensor, names: tuple[str, str]):
    """The exporter's own object: an ONNXProgram, an ExportedProgram or a traced ScriptModule."""
    dynamic = ({0: torch.export.Dim("batch")},)
    try:
        with _quiet(), torch.no_grad():
            if fmt == "onnx":
                return torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=dynamic,
                                         input_names=[names[0]], output_names=[names[1]])
            if fmt == "pt2":
                return torch.export.export(module, (example,), dynamic_shapes=dynamic)
            return torch.jit.trace(module, (example,), check_trace=False)
    except Exception as e:  # the exporters raise many kinds: data-dependent control flow, unsupported ops
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the ONNX exporter colours its messages
        first = next((line for line in text.splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"The model cannot be exported as {fmt} ({type(e).__name__}: {first[:300]}). "
                          f"Try another --format ({', '.join(SUFFIXES)}); a custom model must not branch on "
                          "its input's values.") from None


def serialise(fmt: str, module: torch.nn.Module, example: torch.Tensor, names: tuple[str, str],
              metadata: dict) -> bytes:
    """`module` captured on `example` (a batch of >= 2, so the batch size is not specialised to 1),
    as the file's bytes, with `metadata` inside."""
    captured = _capture(fmt, module, example, names)
    text = json.dumps(metadata)
    if fmt == "onnx":
        proto = captured.model_proto
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA, text
        i, o = metadata["input"], metadata["output"]
        proto.doc_string = (f"trainlab export of {metadata['run_dir']} ({metadata['checkpoint']}.pt): "
                            f"{i['name']} {i['dtype']} [N, {', '.join(map(str, i['shape']))}], "
                            f"{i['range']} -> {o['name']} {o['dtype']}")
        if proto.ByteSize() >= 2 ** 31:
            raise ConfigError(f"The ONNX model is {proto.ByteSize() / 2**30:.1f} GiB: one ONNX file holds at most "
                              "2 GiB (protobuf). Use --format pt2.")
        return proto.SerializeToString()
    buffer = io.BytesIO()
    with _quiet():
        if fmt == "pt2":
            torch.export.save(captured, buffer, extra_files={METADATA: text})
        else:
            torch.jit.save(captured, buffer, _extra_files={METADATA: text})
    return buffer.getvalue()


def load(fmt: str, data: bytes) -> Runner:
    """The file's bytes loaded back the way a consumer loads them; returns batch -> output."""
    if fmt == "onnx":
        return onnx_runner(data, "the exported model")
    buffer = io.BytesIO(data)
    with _quiet():
        module = torch.export.load(buffer).module() if fmt == "pt2" else torch.jit.load(buffer)
    return lambda x: module(x)


def onnx_runner(model: bytes | str | Path, where: str) -> Runner:
    """onnxruntime on the CPU with torch's thread budget; an unreadable file is a DataError (exit 3)."""
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf / RuntimeError
        first = (str(e).splitlines() or [""])[0][:200]
        raise DataError(f"{where} is not an ONNX model onnxruntime can load ({type(e).__name__}: {first}). "
                        "Give a file `trainlab export --format onnx` wrote.") from None
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(session.run(None, {name: x.numpy()})[0]))

    run.session, run.where = session, where  # type: ignore[attr-defined]  # for check_onnx_input
    return run


def check_onnx_input(runner: Runner, spec: dict, where: str, run_dir: str) -> None:
    """An ONNX file made from another run takes another input: refuse it, naming both (exit 3)."""
    inp = runner.session.get_inputs()[0]  # type: ignore[attr-defined]
    want_type, want_shape = ORT_TYPES.get(spec["dtype"], spec["dtype"]), spec["shape"]
    if len(runner.session.get_inputs()) != 1 or inp.type != want_type or list(inp.shape[1:]) != want_shape:
        raise DataError(f"{where} takes {inp.name} {inp.type} of shape {inp.shape}, but run '{run_dir}' gives "
                        f"{spec['name']} {want_type} of shape [batch, {', '.join(map(str, want_shape))}]. It was "
                        f"exported from another run: export this one with trainlab export {run_dir}.")
