"""Many processes under torchrun: this process's rank, the process group, and the few collectives the loop needs.

torch.distributed does the work (DistributedDataParallel's gradient all-reduce, gloo on CPUs,
NCCL on CUDA); this module only reads torchrun's environment and names what train() asks of
the group: slice a global batch, sum running totals, agree on a stop, send rank 0's objects.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional

import torch

from .errors import ConfigError, TrainlabError

# Seconds a collective may wait for the other ranks before it fails (a dead or stuck peer): the
# process group's timeout. TRAINLAB_COLLECTIVE_TIMEOUT overrides it (the config is not known yet
# when the group starts: a resumed run's config comes from rank 0).
DEFAULT_COLLECTIVE_TIMEOUT_S = 300


@dataclass(frozen=True)
class World:
    """Where this process stands among the job's processes; World() is a single-process run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes the run directory, prints progress and logs."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: cuda:LOCAL_RANK under torchrun."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    def local(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch (B, ...): contiguous slices whose sizes differ by at
        most one, so any world size divides any batch (a slice may be empty when B < size)."""
        if not self.distributed:
            return t
        return t.tensor_split(self.size)[self.rank]

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce `t` in place as a sum over the ranks (every rank gets the same bits)."""
        if self.distributed:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def max(self, value: int, device: torch.device) -> int:
        """The largest of the ranks' `value`s on every rank: a stop request (the signal's number)
        seen by one rank stops all of them at the same step."""
        if not self.distributed:
            return value
        t = torch.tensor([float(value)], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def share(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (the others' argument is ignored).

        broadcast_object_list pickles: what is unpickled comes from rank 0 of this job over the
        job's own process group, never from a file.
        """
        if not self.distributed:
            return obj
        box = [obj if self.is_writer else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def on_writer(self, fn):
        """fn() on rank 0 and its result on every rank; a TrainlabError it raises is raised on every
        rank, so the others stop with rank 0's message instead of waiting for it."""
        if not self.distributed:
            return fn()
        outcome = None
        if self.is_writer:
            try:
                outcome = ("ok", fn())
            except TrainlabError as e:
                outcome = ("error", e)
        outcome = self.share(outcome)
        if outcome[0] == "error":
            raise outcome[1]
        return outcome[1]


def world_from_env() -> World:
    """The World torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK; World() without them."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def start() -> World:
    """This process's World, with the process group started when there are several processes.

    gloo for CPU tensors, NCCL for CUDA ones (both when CUDA is visible: the device is chosen
    later from the config). A collective that waits longer than the timeout fails, naming the rank.
    """
    world = world_from_env()
    if not world.distributed or torch.distributed.is_initialized():
        return world
    timeout = collective_timeout()
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    # torchrun's store outlives a restart, and the gloo addresses the dead attempt published in it
    # are found again by the new one (seen with torch 2.13: the restarted ranks dial the dead rank's
    # port and hang): every attempt gets keys of its own.
    store, _, _ = next(torch.distributed.rendezvous("env://", rank=world.rank, world_size=world.size,
                                                    timeout=timedelta(seconds=timeout)))
    store = torch.distributed.PrefixStore(f"trainlab/attempt-{restart_count()}", store)
    torch.distributed.init_process_group(backend, store=store, rank=world.rank, world_size=world.size,
                                         timeout=timedelta(seconds=timeout))
    return world


def stop(world: World) -> None:
    """Leave the process group at the end of a run (torchrun's workers then exit cleanly).

    Once, in CI (2 cores, torch 2.13), rank 1 aborted at its exit ("terminate called without an
    active exception", SIGABRT) while rank 0 was still writing summary.json: gloo's threads were
    torn down on one rank while the other still held its connections. Hence a barrier first (every
    rank leaves together) and a collection of what still refers to the group (DistributedDataParallel
    holds it), so that the group's threads are joined here and not during interpreter shutdown.
    """
    if world.distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()
        gc.collect()
        torch.distributed.destroy_process_group()


def collective_timeout() -> float:
    text = os.environ.get("TRAINLAB_COLLECTIVE_TIMEOUT", str(DEFAULT_COLLECTIVE_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"TRAINLAB_COLLECTIVE_TIMEOUT={text!r} is not a positive number of seconds "
                          f"(default {DEFAULT_COLLECTIVE_TIMEOUT_S}).")
    return value


def restart_count() -> int:
    """How many times torchrun (--max-restarts) has restarted this group: 0 on the first attempt."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def shard(model: torch.nn.Module) -> None:
    """train.strategy=fsdp: torch's fully_shard on each transformer block, then on the whole model,
    in place: every rank keeps 1/world of each parameter, gradient and optimiser state; a block's
    parameters are gathered for its forward and backward and freed after (FSDP2)."""
    from torch.distributed.fsdp import fully_shard
    for block in getattr(model, "blocks", ()):
        fully_shard(block)
    fully_shard(model)


def is_sharded(model: torch.nn.Module) -> bool:
    if "torch.distributed.fsdp" not in sys.modules:  # shard() imports it: nothing is sharded before, and
        return False                                  # importing it costs 1-2 s (sympy) at a run's first checkpoint
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The model's and the optimiser's state as one process would save them, on the CPU.

    A sharded model's are gathered from every rank (a collective: every rank calls this), the
    optimiser's keyed by parameter name (torch.distributed.checkpoint's full state dict) instead of
    by position; load_full_state reads both forms into any strategy and world size.
    """
    if not is_sharded(model):
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizer, options=options)


def full_model_state(model: torch.nn.Module) -> dict:
    """The model's weights as one process would save them (gathered from every rank when sharded)."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer], model_state: dict,
                    optimizer_state: Optional[dict] = None) -> None:
    """Put a whole (unsharded) state into `model` and `optimizer`, sharded or not; the optimiser's
    state may be keyed by position (a plain optimizer.state_dict()) or by parameter name (a sharded run's)."""
    by_name = optimizer_state is not None and _keyed_by_name(optimizer_state)
    if not is_sharded(model) and not by_name:
        model.load_state_dict(model_state)
        if optimizer is not None and optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        return
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    if optimizer is not None and optimizer_state is not None:
        if not by_name:
            optimizer_state = _by_name(model, optimizer, optimizer_state)
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)


def _keyed_by_name(optimizer_state: dict) -> bool:
    groups = optimizer_state.get("param_groups", [])
    return any(isinstance(p, str) for g in groups for p in g.get("params", []))


def _by_name(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A positional optimizer.state_dict() keyed by parameter name instead: position i is the i-th
    parameter of this optimiser's groups, built in the same order from the same config."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {"state": {order[i]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]]}


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` when there are several processes (it all-reduces the
    gradients during backward, averaging over ranks); the model itself otherwise."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel
    ids: Optional[list[int]] = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
