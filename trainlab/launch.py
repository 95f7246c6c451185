"""`trainlab train --nproc N`: start torch's elastic launcher (torchrun's own code) on `python -m trainlab train`."""

from __future__ import annotations

import os
import socket
from typing import Optional

from .errors import ConfigError

# Seconds the c10d rendezvous waits for the other nodes before it gives up (torchrun's default is
# 600: a typo in --rdzv-endpoint would hang ten minutes).
DEFAULT_RDZV_TIMEOUT_S = 60


def launch(worker_args: list[str], nproc: int, *, nnodes: str = "1", node_rank: Optional[int] = None,
           rdzv_endpoint: Optional[str] = None, rdzv_timeout: int = DEFAULT_RDZV_TIMEOUT_S,
           max_restarts: int = 0, device: str = "auto") -> int:
    """Run `trainlab <worker_args>` on `nproc` processes of this machine through
    torch.distributed.run (the module behind torchrun) and return the exit code of the job: 0, or
    the first failed worker's code (4 for a divergence, 143 for SIGTERM, 128 + n for signal n).

    One machine without an endpoint: a standalone rendezvous on a free local port. Several
    machines: c10d rendezvous at `rdzv_endpoint` (host:port), nodes counted by `nnodes` ("2" or an
    elastic range "1:4"), each node started with the same command (and `node_rank` if fixed).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give at least 1 process.")
    if rdzv_endpoint is None and nnodes != "1":
        raise ConfigError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT, the address every node reaches.")
    if rdzv_endpoint is not None:
        _check_endpoint(rdzv_endpoint)
    # The agent's C++ store logs every failed connection attempt with a C++ stack; the error below
    # says what failed. The level is read when torch loads, and workers get the user's setting back.
    user_level = os.environ.get("TORCH_CPP_LOG_LEVEL")
    os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
    import torch
    if user_level is None:
        os.environ.pop("TORCH_CPP_LOG_LEVEL")
    else:
        os.environ["TORCH_CPP_LOG_LEVEL"] = user_level
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import get_args_parser, run

    if device != "cpu" and torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc {nproc} is more processes than the {torch.cuda.device_count()} visible GPUs "
                          f"(one GPU per process). Use --nproc {torch.cuda.device_count()} or fewer, or "
                          "train.device=cpu.")
    args = ["--nproc-per-node", str(nproc), "--max-restarts", str(max_restarts)]
    if rdzv_endpoint is None:
        args.append("--standalone")
    else:
        args += ["--nnodes", nnodes, "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint,
                 "--rdzv-conf", f"join_timeout={int(rdzv_timeout)},read_timeout={int(rdzv_timeout)}"]
        if node_rank is not None:
            args += ["--node-rank", str(node_rank)]
    args += ["-m", "trainlab", *worker_args]
    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as e:
        _, failure = e.get_first_failure()
        code = failure.exitcode
        return code if code > 0 else 128 - code  # a worker killed by signal n reports -n
    except SignalException as e:  # SIGTERM or SIGINT to the launcher: torchrun passed it to the workers,
        return 128 + int(e.sigval)  # which saved a resumable checkpoint and stopped
    except RendezvousError as e:
        where = rdzv_endpoint or "the local standalone rendezvous"
        raise ConfigError(f"The rendezvous at {where} did not complete within {rdzv_timeout} s "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}). Check that "
                          f"every node runs the same command with --rdzv-endpoint {where} and that the host "
                          "answers on that port; --rdzv-timeout changes the wait.") from None
    return 0


def _check_endpoint(endpoint: str) -> None:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--rdzv-endpoint {endpoint!r} is not HOST:PORT (e.g. 10.0.0.1:29500).")
    try:
        socket.getaddrinfo(host, int(port))
    except socket.gaierror:
        raise ConfigError(f"--rdzv-endpoint {endpoint}: the host {host!r} is not known here.") from None
