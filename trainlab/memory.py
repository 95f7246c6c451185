"""Will the run fit in memory? Decided from the config before anything is allocated, never by the OOM killer.

The model is built on the meta device (shapes, no storage): its parameters, their gradients and the
optimiser's state per parameter, the activations of one training micro-batch (a meta forward pass
whose leaf modules' outputs are summed, doubled for backward) or of one evaluation batch, and the
copies of the data loader.Batches keeps on the device, against the memory the device has available
(MemAvailable or the cgroup's limit on the CPU, torch.cuda.mem_get_info on a GPU).
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import ConfigError

# TRAINLAB_MEMORY_CHECK=0 skips the check: the estimate is rough, and a custom model may hold or
# free memory in ways no estimate from its forward pass sees.
SKIP_ENV = "TRAINLAB_MEMORY_CHECK"

# Backward keeps each activation the forward saved until that layer's gradient is computed, and
# creates a gradient of the same shape for each one it passes through: its peak is the saved
# activations plus the gradients in flight, at most about twice the forward's outputs. The factor
# also covers what the forward hooks below do not see: functional ops between modules (residual
# additions, attention inside F.scaled_dot_product_attention), the loss's log-softmax copy of the
# logits and the dropout masks.
BACKWARD_FACTOR = 2


@dataclass
class Estimate:
    """Bytes a run needs, by part, and what the device has available (None: unknown)."""

    parts: dict[str, int]          # parameters, gradients, optimiser state, activations, data
    available: Optional[int]
    source: str                    # where `available` was read
    device: str                    # "cpu" or "cuda:0"
    batch: int                     # examples (windows) per micro-batch the activations were measured on
    states: int                    # optimiser values kept per parameter
    parameters: int                # parameter count (shared ones once; on this process when sharded)
    evaluation: bool = False       # the activations part is an evaluation pass's (eval.batch_size), not training's
    per_example: int = 0           # activation bytes per example of that pass

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def check(cfg, splits, num_outputs: int, device: torch.device, world: Any = None) -> Optional[Estimate]:
    """Raise ConfigError (exit 2) when the run's estimate exceeds the memory available on `device`.

    Called by build_setup before it builds the model of the config (a model passed to train() is
    already allocated, and is not checked). Returns the estimate, or None when there is none (a
    custom model that cannot be built on the meta device, an unknown device, TRAINLAB_MEMORY_CHECK=0).
    """
    if os.environ.get(SKIP_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        found = estimate(cfg, splits, num_outputs, device, world)
    except Exception:  # noqa: BLE001 — never refuse (or crash) for the estimate's own sake: the build says what is wrong
        return None
    if found.available is not None and found.total > found.available:
        raise ConfigError(_message(cfg, found))
    return found


def estimate(cfg, splits, num_outputs: int, device: torch.device, world: Any = None) -> Estimate:
    """The bytes the run would hold at its peak on `device`, by part, built on the meta device (no allocation).

    >>> e = estimate(cfg, splits, splits.num_outputs, torch.device("cpu"))
    >>> e.parts["parameters"], e.total, e.available
    """
    from .models import build_model

    dtype = getattr(torch, cfg.train.dtype)
    size = world.size if world is not None and getattr(world, "distributed", False) else 1
    rng = torch.get_rng_state()  # meta kernels draw nothing, but the run's seeded init must not move
    try:
        with torch.device("meta"), MetaShapes():
            model = build_model(cfg.model, splits.input_shape, num_outputs)
        model = model.to(dtype=dtype)
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        buffers = sum(b.numel() * b.element_size() for b in model.buffers())
        count = sum(p.numel() for p in model.parameters())
        batch, train_bytes, eval_bytes = _activations(model, cfg, splits, dtype, size)
        evaluation = eval_bytes > train_bytes
        per_example = eval_bytes // cfg.eval.batch_size if evaluation else train_bytes // batch
    finally:
        torch.set_rng_state(rng)
    if size > 1 and cfg.train.strategy == "fsdp":  # every rank keeps 1/world of each parameter, gradient and state
        params, trainable, count = params // size, trainable // size, count // size
    states = optimizer_states(cfg)
    available, source = available_memory(device)
    parts = {
        "parameters": params + buffers,
        "gradients": trainable,
        "optimiser state": states * trainable,
        "activations": max(train_bytes, eval_bytes),  # training and evaluation passes never overlap
        "data": _data_bytes(cfg, splits, dtype, device),
    }
    return Estimate(parts=parts, available=available, source=source, device=str(device), batch=batch,
                    states=states, parameters=count, evaluation=evaluation, per_example=per_example)


def optimizer_states(cfg) -> int:
    """Values torch.optim keeps per parameter: Adam/AdamW 2 (the two moments), SGD with momentum 1
    (the momentum buffer), RMSprop 1 (the squared average) plus 1 with momentum, Adagrad 1 (the sum)."""
    o = cfg.optim
    if o.name in ("gd", "sgd", "momentum"):
        momentum = o.momentum if o.momentum is not None else (0.9 if o.name == "momentum" else 0.0)
        return 1 if momentum > 0 else 0
    if o.name == "rmsprop":
        return 1 + (1 if o.momentum else 0)
    if o.name == "adagrad":
        return 1
    return 2  # adam, adamw


def _activations(model: nn.Module, cfg, splits, dtype: torch.dtype, size: int) -> tuple[int, int, int]:
    """(examples per micro-batch, training bytes, evaluation bytes) from one meta forward pass.

    train_step splits each step's batch of train.batch_size x train.accumulate examples (the whole
    split for optim.name=gd) into train.accumulate micro-batches and runs forward and backward on
    one at a time: the activations of one micro-batch are alive at once. On several processes each
    rank takes its slice of the batch. Forward hooks on the leaf modules sum their outputs' bytes.
    """
    language = splits.task == "language_model"
    accumulate = cfg.train.accumulate
    if language:
        full = cfg.train.batch_size * accumulate           # windows of model.block_size tokens
    else:
        n_train = len(splits.train)
        full = n_train if cfg.optim.name == "gd" else min(cfg.train.batch_size * accumulate, n_train)
    local = math.ceil(full / size)
    micro = max(1, math.ceil(local / accumulate))           # tensor_split's first pieces are the largest
    if language:
        x = torch.empty((micro, cfg.model.block_size), dtype=torch.long, device="meta")
        per_example_input = cfg.model.block_size * 8 * 2   # (B, T) int64 ids and targets
    else:
        x = torch.empty((micro, *splits.input_shape), dtype=dtype, device="meta")
        per_example_input = math.prod(splits.input_shape) * dtype.itemsize + 8
    outputs = leaf_outputs(model, x)
    total = sum(nbytes for _, _, nbytes in outputs)
    largest = max((nbytes for _, _, nbytes in outputs), default=0)
    train_bytes = BACKWARD_FACTOR * total + local * per_example_input
    # Evaluation runs without a graph: at most a layer's input and output are alive, eval.batch_size at a time.
    eval_bytes = 2 * largest * cfg.eval.batch_size // micro + cfg.eval.batch_size * per_example_input
    return micro, train_bytes, eval_bytes


def leaf_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, bytes) of every new tensor the model's leaf modules return on input `x`, in
    training mode, in call order. On the meta device (through MetaShapes) nothing is allocated or
    computed; on a real device it is the real forward (what the tests compare the meta one with)."""
    found: list[tuple[str, tuple[int, ...], int]] = []
    names = {m: n for n, m in model.named_modules()}

    def count(module, inputs, output):
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        given = {id(_root(i)) for i in inputs if isinstance(i, torch.Tensor)}
        for t in tensors:
            # A view of an input (Flatten) or the input itself (Dropout(0), Identity) owns no new memory;
            # a view of a fresh tensor (a 3-D Linear's output is one, on the CPU) does.
            if isinstance(t, torch.Tensor) and id(_root(t)) not in given:
                found.append((names[module], tuple(t.shape), t.numel() * t.element_size()))

    handles = [m.register_forward_hook(count) for m in model.modules() if next(m.children(), None) is None]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.train()
        with torch.no_grad(), (MetaShapes() if x.is_meta else nullcontext()):
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return found


def _root(t: torch.Tensor) -> torch.Tensor:
    """The tensor whose memory `t` views (itself when it is no view)."""
    return t._base if t._base is not None else t


# ---------------------------------------------------------------- shapes on the meta device without torch's meta kernels

class MetaShapes(TorchFunctionMode):
    """Build and run a model on the meta device with shape rules instead of torch's meta kernels.

    Most of torch's meta kernels are Python decompositions whose first call imports torch._dynamo
    (1.2-1.9 s here, see optim._defer_dynamo_import): this mode answers the common ops of a
    forward pass from their arguments' shapes (an empty meta tensor of the output's shape), skips
    in-place ops on meta tensors (weight initialisation: nothing to initialise) and hands every
    other call to torch, so an unusual op is slower, never wrong.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        first = args[0] if args else next(iter(kwargs.values()), None)  # nn.init passes tensor= by keyword
        if isinstance(first, (list, tuple)) and name in ("cat", "concat", "concatenate") and first \
                and all(isinstance(t, torch.Tensor) and t.is_meta for t in first):
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            dim = dim % first[0].ndim
            shape = list(first[0].shape)
            shape[dim] = sum(t.shape[dim] for t in first)
            return torch.empty(shape, dtype=first[0].dtype, device="meta")
        if name == "arange" and _on_meta(kwargs) and all(isinstance(a, (int, float)) for a in args):
            start, end, step = (0, args[0], 1) if len(args) == 1 else (*args, 1)[:3]
            integral = all(isinstance(a, int) for a in args)
            dtype = kwargs.get("dtype") or (torch.long if integral else torch.get_default_dtype())
            return torch.empty(max(0, math.ceil((end - start) / step)), dtype=dtype, device="meta")
        if not (isinstance(first, torch.Tensor) and first.is_meta):
            return func(*args, **kwargs)
        if name.endswith("_") and not name.startswith("__") or name in _INPLACE:
            return first  # initialisation, BatchNorm's step counter, x += y: nothing to do on meta
        if name in _SAME and not (name.startswith("dropout") and _identity_dropout(args, kwargs)):
            return torch.empty(first.shape, dtype=first.dtype, device="meta")
        if name.startswith("dropout"):
            return first  # p=0 or eval mode: torch returns the input itself
        rule = _RULES.get(name)
        if rule is not None:
            shape, dtype = rule(*args, **kwargs)
            if shape is not None:
                return torch.empty(shape, dtype=dtype, device="meta")
        return func(*args, **kwargs)


def _on_meta(kwargs: dict) -> bool:
    """Whether a factory call makes a meta tensor (its device= or the default device, torch.device("meta"))."""
    device = kwargs.get("device")
    return torch.device(device if device is not None else torch.get_default_device()).type == "meta"


_INPLACE = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__idiv__"}
# Ops whose output has the shape and dtype of their first argument.
_SAME = {"relu", "relu6", "gelu", "tanh", "sigmoid", "silu", "elu", "selu", "celu", "leaky_relu", "hardtanh",
         "hardswish", "hardsigmoid", "mish", "softplus", "logsigmoid", "layer_norm", "batch_norm", "group_norm",
         "instance_norm", "rms_norm", "softmax", "log_softmax", "cos", "sin", "exp", "log", "neg", "__neg__", "sqrt",
         "rsqrt", "abs", "square", "reciprocal", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
         "feature_alpha_dropout"}


def _identity_dropout(args, kwargs) -> bool:
    p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
    training = args[2] if len(args) > 2 else kwargs.get("training", True)
    return p == 0 or not training


def _pair(v, n: int) -> tuple:
    return tuple(v) * (n if len(tuple(v)) == 1 else 1) if isinstance(v, (tuple, list)) else (v,) * n


def _window(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil: bool = False) -> int:
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + padding:  # torch's rule: the last window starts inside the input
        out -= 1
    return out


def _conv(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    n = w.ndim - 2
    if isinstance(padding, str):
        if padding == "same":
            return (*x.shape[:-n - 1], w.shape[0], *x.shape[-n:]), x.dtype
        padding = 0
    stride, padding, dilation = _pair(stride, n), _pair(padding, n), _pair(dilation, n)
    spatial = [_window(s, k, st, p, d) for s, k, st, p, d in zip(x.shape[-n:], w.shape[2:], stride, padding, dilation)]
    return (*x.shape[:-n - 1], w.shape[0], *spatial), x.dtype


def _pool(n: int, has_dilation: bool):
    def rule(x, kernel_size, stride=None, padding=0, *rest, **kwargs):
        if has_dilation:
            dilation = rest[0] if rest else kwargs.get("dilation", 1)
            ceil = rest[1] if len(rest) > 1 else kwargs.get("ceil_mode", False)
            if (rest[2] if len(rest) > 2 else kwargs.get("return_indices", False)):
                return None, None  # a tuple: torch's own kernel
        else:
            dilation, ceil = 1, rest[0] if rest else kwargs.get("ceil_mode", False)
        kernel = _pair(kernel_size, n)
        stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, n)
        padding, dilation = _pair(padding, n), _pair(dilation, n)
        spatial = [_window(s, k, st, p, d, ceil) for s, k, st, p, d in zip(x.shape[-n:], kernel, stride, padding, dilation)]
        return (*x.shape[:-n], *spatial), x.dtype
    return rule


def _adaptive(x, output_size, *rest, **kwargs):
    if rest and rest[0] or kwargs.get("return_indices"):
        return None, None
    out = _pair(output_size, 2)
    return (*x.shape[:-2], *(s if o is None else o for s, o in zip(x.shape[-2:], out))), x.dtype


def _binary(a, b, *rest, **kwargs):
    if kwargs.get("out") is not None or not isinstance(b, (torch.Tensor, int, float, bool)):
        return None, None
    shapes = [t.shape for t in (a, b) if isinstance(t, torch.Tensor)]
    return _broadcast(*shapes), torch.result_type(a, b)


def _broadcast(*shapes) -> tuple[int, ...]:
    """NumPy broadcasting of shapes (torch.broadcast_shapes imports sympy on its first call)."""
    n = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (n - len(s)) + tuple(s) for s in shapes]):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _matmul(a, b, **kwargs):
    if not (isinstance(b, torch.Tensor) and a.ndim >= 2 and b.ndim >= 2):
        return None, None
    return (*_broadcast(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1]), torch.result_type(a, b)


_RULES = {
    "linear": lambda x, w, b=None: ((*x.shape[:-1], w.shape[0]), x.dtype),
    "conv1d": _conv, "conv2d": _conv, "conv3d": _conv,
    "max_pool1d": _pool(1, True), "max_pool2d": _pool(2, True), "_max_pool2d": _pool(2, True),
    "avg_pool1d": _pool(1, False), "avg_pool2d": _pool(2, False),
    "adaptive_avg_pool2d": _adaptive, "adaptive_max_pool2d": _adaptive,
    "embedding": lambda idx, w, *a, **k: ((*idx.shape, w.shape[-1]), w.dtype),
    "scaled_dot_product_attention": lambda q, k, v, *a, **kw: ((*q.shape[:-1], v.shape[-1]), q.dtype),
    "outer": lambda a, b: ((a.numel(), b.numel()), torch.result_type(a, b)),
    "matmul": _matmul, "__matmul__": _matmul, "mm": _matmul, "bmm": _matmul,
    **{name: _binary for name in ("add", "sub", "mul", "div", "true_divide", "pow", "maximum", "minimum",
                                  "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
                                  "__rtruediv__", "__div__", "__rdiv__", "__pow__", "__rpow__")},
}


def _data_bytes(cfg, splits, dtype: torch.dtype, device: torch.device) -> int:
    """What loader.Batches (or TokenBatches) adds on the device for the splits a run holds at once.

    The loaded splits are already in the process's memory: on the CPU only the copies count (the
    normalised float copy of a split, kept when small; a regression target's float copy), on a GPU
    every device-resident split does. During training the train and val batches live together; at
    the end the train split's device copy is freed before the train, val and test evaluation passes.
    """
    if splits.task == "language_model":
        # TokenWindows keeps each split's ids on the device as int32.
        return 4 * sum(len(s) for s in (splits.train, splits.val) if s is not None)
    from .data import FileSplit
    from .data import augment as aug
    from .data.loader import DEVICE_RESIDENT_MAX_BYTES, NORMALISE_ONCE_MAX_BYTES

    on_cpu = device.type == "cpu"

    def resident(split, limit: Optional[int], on_pixels: bool) -> int:
        if split is None or isinstance(split, FileSplit):
            return 0
        n = len(split) if limit is None else min(limit, len(split))
        per_example = math.prod(split.x.shape[1:])
        raw = n * per_example * split.x.element_size()
        if cfg.data.loader == "stream" or (cfg.data.loader == "auto" and split.x.nelement() * split.x.element_size()
                                           > DEVICE_RESIDENT_MAX_BYTES):
            return 0  # streamed through a DataLoader: a few batches at a time
        floats = n * per_example * dtype.itemsize
        normalised = not on_pixels and floats <= NORMALISE_ONCE_MAX_BYTES
        y = n * (dtype.itemsize if splits.task == "regression" else (0 if on_cpu else split.y.element_size()))
        if on_cpu:
            return (floats if normalised else 0) + y
        return raw + (floats if normalised else 0) + y  # the raw copy and its normalised one meet once

    a = cfg.regularize.augment
    on_pixels = splits.is_image and aug.on_pixels(a)
    val = resident(splits.val, cfg.eval.limit, False)
    training = resident(splits.train, None, on_pixels) + val
    final = val + max(resident(splits.train, cfg.eval.limit, False), resident(splits.test, cfg.eval.limit, False))
    return max(training, final)


def available_memory(device: torch.device) -> tuple[Optional[int], str]:
    """(bytes free for the run on `device`, where that was read); (None, reason) when unknown.

    CPU: MemAvailable of /proc/meminfo, or less when the process's cgroup (a container, a SLURM or
    Kubernetes job) allows less: its limit minus its usage not counting reclaimable page cache.
    CUDA: torch.cuda.mem_get_info's free bytes. Swap is not counted.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device} (torch.cuda.mem_get_info)"
    if device.type != "cpu":
        return None, f"unknown for {device.type}"
    available, source = None, "unknown (no /proc/meminfo)"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available, source = int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
                break
    except (OSError, ValueError, IndexError):
        pass
    limited = _cgroup_room()
    if limited is not None and (available is None or limited < available):
        available, source = limited, "the cgroup's memory limit minus its usage"
    return available, source


def _cgroup_room() -> Optional[int]:
    """The process's cgroup memory limit minus its working set (usage less inactive file cache), or None."""
    for limit_file, usage_file, stat_key in (("memory.max", "memory.current", "inactive_file"),
                                             ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
                                              "total_inactive_file")):
        root = Path("/sys/fs/cgroup")
        try:
            text = (root / limit_file).read_text().strip()
            if text == "max":
                continue
            limit, usage = int(text), int((root / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # cgroup v1 writes "no limit" as a huge number
            continue
        inactive = 0
        try:
            stat = (root / Path(limit_file).parent / "memory.stat").read_text()
            inactive = next((int(line.split()[1]) for line in stat.splitlines() if line.startswith(stat_key + " ")), 0)
        except (OSError, ValueError, IndexError):
            pass
        return max(0, limit - max(0, usage - inactive))
    return None


def human(n: float) -> str:
    """Bytes in binary units: '1.5 GiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _message(cfg, e: Estimate) -> str:
    """The refusal: the total, every part, the memory available, and what to lower for the largest parts."""
    optim = f"optimiser state ({cfg.optim.name}: {e.states} per parameter)"
    shown = {"parameters": f"parameters {{}} ({e.parameters:,} of them)", "gradients": "gradients {}",
             "optimiser state": optim + " {}",
             "activations": (f"activations of an eval.batch_size={cfg.eval.batch_size} pass {{}}" if e.evaluation else
                             f"activations {{}} (a {e.batch}-{'window' if cfg.model.name == 'gpt' else 'example'} "
                             "batch, forward and backward)"),
             "data": "data copies on the device {}"}
    parts = ", ".join(shown[k].format(human(v)) for k, v in e.parts.items() if v)
    model_bytes = e.parts["parameters"] + e.parts["gradients"] + e.parts["optimiser state"]
    advice = []
    ranked = sorted((("model", model_bytes), ("activations", e.parts["activations"]), ("data", e.parts["data"])),
                    key=lambda kv: -kv[1])
    for what, nbytes in ranked:
        if nbytes * 4 >= e.total or not advice:
            advice.append(_advice(cfg, what, e))
    where = "the CPU" if e.device == "cpu" else e.device
    return (f"The run does not fit in memory: it needs about {human(e.total)} ({parts}), but {where} has "
            f"{human(e.available)} available ({e.source}). The model was not built. To fit: "
            f"{'; '.join(advice)}. (The estimate is rough: {SKIP_ENV}=0 skips it.)")


def _advice(cfg, what: str, e: Estimate) -> str:
    m, t = cfg.model, cfg.train
    if what == "model":
        sizes = {"mlp": f"model.hidden (now {list(m.hidden)})", "cnn": f"model.channels (now {list(m.channels)})",
                 "resnet": f"model.width (now {m.width}) or model.depth (now {m.depth})",
                 "gpt": f"model.n_embd (now {m.n_embd}), model.n_layer (now {m.n_layer}) or the vocabulary "
                        "(data.vocab_size, data.tokenizer)"}.get(m.name, "the model's size (model.kwargs)")
        text = f"a smaller model: lower {sizes}"
        if e.states >= 2:
            text += f"; optim.name={cfg.optim.name} keeps {e.states} values per parameter, sgd 1 with momentum"
        return text
    if what == "activations":
        # Examples whose activations fit beside everything else.
        fits = max(0, e.available - (e.total - e.parts["activations"])) // max(1, e.per_example)
        if fits < 1:
            return _advice(cfg, "model", e) + " (not even one example's activations fit beside it)"
        if e.evaluation:
            return f"a smaller evaluation batch: eval.batch_size={fits} or less (now {cfg.eval.batch_size})"
        per_step = e.batch * t.accumulate  # examples (windows) one optimiser step averages over
        k = math.ceil(per_step / fits)
        unit = "windows" if m.name == "gpt" else "examples"
        if cfg.optim.name == "gd":
            return (f"smaller micro-batches: optim.name=gd computes on the whole training split at once and about "
                    f"{fits:,} {unit} fit; train.accumulate={k} (now {t.accumulate}) splits it into micro-batches "
                    f"of {math.ceil(per_step / k):,}")
        text = (f"a smaller batch: about {fits:,} {unit} per micro-batch fit; train.batch_size={per_step // k} "
                f"with train.accumulate={k} keeps about {per_step // k * k:,} per optimiser step (now "
                f"train.batch_size={t.batch_size}, train.accumulate={t.accumulate})")
        if m.name == "gpt":
            text += f", or lower model.block_size (now {m.block_size})"
        return text
    if cfg.model.name == "gpt":
        return "a shorter text (its token ids are kept on the device)"
    return "less data on the device: data.loader=stream reads batches as needed, or data.limit keeps fewer examples"
